"""Control request/reply over ZeroMQ REQ/REP.

Servers (every process) bind a REP socket and answer each request with
`dispatch(handlers, raw)`. Clients (the API, the CLI, tests) use `request` /
`arequest`, which open a fresh REQ socket per call: a timed-out REQ socket is
stuck in its state machine, and a fresh one costs microseconds over ipc://.
A peer that does not answer within the timeout yields `PeerUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

if TYPE_CHECKING:  # imported lazily by arequest: sync processes (workers) never load asyncio
    import zmq.asyncio

from shared.messages import PROTOCOL_VERSION, ControlReply, ControlRequest, decode, encode

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]


class PeerUnavailable(Exception):
    """The control peer did not answer in time (dead, hung or not started)."""


class ControlError(Exception):
    """A handler's refusal, with the HTTP-like status the API should forward."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def dispatch(handlers: dict[str, Handler], raw: bytes) -> bytes:
    """Decode one request, run its handler, encode the reply. Never raises."""
    try:
        req = decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return encode(ControlReply(ok=False, error=f"bad request: {exc}", status=400))
    if not isinstance(req, ControlRequest):
        return encode(ControlReply(ok=False, error="not a control request", status=400))
    if req.version != PROTOCOL_VERSION:
        return encode(
            ControlReply(ok=False, error=f"protocol version {req.version} unsupported", status=400)
        )
    handler = handlers.get(req.op)
    if handler is None:
        return encode(ControlReply(ok=False, error=f"unknown op {req.op!r}", status=404))
    try:
        data = handler(req.args)
    except ControlError as exc:
        return encode(ControlReply(ok=False, error=str(exc), status=exc.status))
    except Exception as exc:  # a handler bug must not kill the process's control loop
        log.exception("control handler %s failed", req.op)
        return encode(ControlReply(ok=False, error=f"internal error: {exc}", status=500))
    if isinstance(data, ControlReply):
        return encode(data)
    return encode(ControlReply(ok=True, data=data))


def _make_req(ctx: zmq.Context[Any] | zmq.asyncio.Context, endpoint: str) -> Any:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def request(
    endpoint: str,
    op: str,
    args: dict[str, Any] | None = None,
    timeout: float = 2.0,
    ctx: zmq.Context[Any] | None = None,
) -> ControlReply:
    """Blocking control call. Raises PeerUnavailable on timeout."""
    ctx = ctx or zmq.Context.instance()
    sock = _make_req(ctx, endpoint)
    try:
        sock.send(encode(ControlRequest(op=op, args=args or {})))
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise PeerUnavailable(f"{endpoint} did not answer {op!r} within {timeout}s")
        reply = decode(sock.recv())
    finally:
        sock.close()
    if not isinstance(reply, ControlReply):
        raise PeerUnavailable(f"{endpoint} answered {op!r} with a non-reply")
    return reply


async def arequest(
    endpoint: str,
    op: str,
    args: dict[str, Any] | None = None,
    timeout: float = 2.0,
    ctx: zmq.asyncio.Context | None = None,
) -> ControlReply:
    """Async control call for asyncio processes (the API). Raises PeerUnavailable."""
    if ctx is None:
        # lazy (and not `import zmq.asyncio`, which would make `zmq` a local name here)
        from zmq.asyncio import Context as AsyncContext

        ctx = AsyncContext.instance()
    sock = _make_req(ctx, endpoint)
    try:
        await sock.send(encode(ControlRequest(op=op, args=args or {})))
        if not await sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise PeerUnavailable(f"{endpoint} did not answer {op!r} within {timeout}s")
        reply = decode(await sock.recv())
    finally:
        sock.close()
    if not isinstance(reply, ControlReply):
        raise PeerUnavailable(f"{endpoint} answered {op!r} with a non-reply")
    return reply
