"""Control request/reply over ZeroMQ REQ/REP, typed by the ops in `shared.ops`.

Servers (every process) bind a REP socket and answer each request with
`dispatch(table, raw)` (or `adispatch` for async handlers), where `table` is an
`OpTable` binding one handler per op of the role's registry. Clients (the API, the CLI,
other roles, tests) use `call` / `acall` with an `Op` and its request Struct and get the
op's reply type back. Each call opens a fresh REQ socket: a timed-out REQ socket is stuck
in its state machine, and a fresh one costs microseconds over ipc://. A peer that does
not answer within the timeout yields `PeerUnavailable`; a refusal raises `ControlError`
with the peer's status; a reply that does not fit the op's type raises `PeerReplyInvalid`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

if TYPE_CHECKING:  # imported lazily by acall: sync processes (workers) never load asyncio
    import zmq.asyncio

from shared.messages import PROTOCOL_VERSION, ControlReply, ControlRequest, decode, encode
from shared.ops.base import BadRequest, Op, OpTable, RepT, ReqT

log = logging.getLogger(__name__)

class PeerUnavailable(Exception):
    """The control peer did not answer in time (dead, hung or not started)."""


class ControlError(Exception):
    """A refusal, with the HTTP-like status the API should forward: raised by a handler
    on the server, and by `call` / `acall` on the client when the peer refused."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class PeerReplyInvalid(ValueError):
    """A peer answered ok=true with data that does not fit the op's reply type."""


def _fail(error: str, status: int) -> bytes:
    return encode(ControlReply(ok=False, error=error, status=status))


def _parse(raw: bytes) -> ControlRequest | bytes:
    """The request, or the encoded refusal of a request that cannot be one."""
    try:
        req = decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _fail(f"bad request: {exc}", 400)
    if not isinstance(req, ControlRequest):
        return _fail("not a control request", 400)
    if req.version != PROTOCOL_VERSION:
        return _fail(f"protocol version {req.version} unsupported", 400)
    return req


def _refusal(op: str, exc: Exception) -> bytes:
    """The reply to a handler that raised: its refusal, or a 500 for a bug."""
    if isinstance(exc, BadRequest):
        return _fail(f"bad request: {exc}", 400)
    if isinstance(exc, ControlError):
        return _fail(str(exc), exc.status)
    log.error("control handler %s failed", op, exc_info=exc)
    return _fail(f"internal error: {exc}", 500)


def _ok(data: Any) -> bytes:
    if isinstance(data, ControlReply):
        return encode(data)
    return encode(ControlReply(ok=True, data=data))


def dispatch(table: OpTable, raw: bytes) -> bytes:
    """Decode one request, run its handler, encode the reply. Never raises."""
    req = _parse(raw)
    if isinstance(req, bytes):
        return req
    try:
        op = table.registry.get(req.op)
        handler = table.handlers.get(req.op)
        if op is None or handler is None:
            return _fail(f"unknown op {req.op!r}", 404)
        return _ok(handler(op.decode_request(req.args)))
    except Exception as exc:  # a handler bug must not kill the process's control loop
        return _refusal(req.op, exc)


async def adispatch(table: OpTable, raw: bytes) -> bytes:
    """`dispatch` for a table whose handlers may be coroutines (the supervisor's)."""
    req = _parse(raw)
    if isinstance(req, bytes):
        return req
    op = table.registry.get(req.op)
    ahandler = table.async_handlers.get(req.op)
    if op is None or ahandler is None:
        return dispatch(table, raw)
    try:
        return _ok(await ahandler(op.decode_request(req.args)))
    except Exception as exc:
        return _refusal(req.op, exc)


def _make_req(ctx: zmq.Context[Any] | zmq.asyncio.Context, endpoint: str) -> Any:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def encode_call(op: Op[ReqT, RepT], req: ReqT) -> bytes:
    """The request bytes of one call (for a caller that polls its own REQ socket)."""
    if not isinstance(req, op.request):
        raise TypeError(f"{op.name} takes {op.request.__name__}, not {type(req).__name__}")
    return encode(ControlRequest(op=op.name, args=msgspec.to_builtins(req)))


def decode_answer(op: Op[ReqT, RepT], endpoint: str, raw: bytes) -> RepT:
    """The reply of one call, or ControlError / PeerReplyInvalid (see `call`)."""
    try:
        reply = decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PeerReplyInvalid(f"{endpoint} answered {op.name!r} with bad bytes: {exc}") from None
    if not isinstance(reply, ControlReply):
        raise PeerReplyInvalid(f"{endpoint} answered {op.name!r} with a non-reply")
    if not reply.ok:
        status = reply.status if 400 <= reply.status <= 599 else 500
        raise ControlError(reply.error or f"{op.role} refused {op.name!r}", status)
    try:
        return op.decode_reply(reply.data)
    except msgspec.ValidationError as exc:
        raise PeerReplyInvalid(f"bad reply from {op.role} to {op.name!r}: {exc}") from None


def call(
    endpoint: str,
    op: Op[ReqT, RepT],
    req: ReqT,
    timeout: float = 2.0,
    ctx: zmq.Context[Any] | None = None,
) -> RepT:
    """Blocking typed control call. Raises PeerUnavailable, ControlError, PeerReplyInvalid."""
    ctx = ctx or zmq.Context.instance()
    sock = _make_req(ctx, endpoint)
    try:
        sock.send(encode_call(op, req))
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise PeerUnavailable(f"{endpoint} did not answer {op.name!r} within {timeout}s")
        raw = sock.recv()
    finally:
        sock.close()
    return decode_answer(op, endpoint, raw)


async def acall(
    endpoint: str,
    op: Op[ReqT, RepT],
    req: ReqT,
    timeout: float = 2.0,
    ctx: zmq.asyncio.Context | None = None,
) -> RepT:
    """Async typed control call for asyncio processes (the API, the supervisor)."""
    if ctx is None:
        # lazy (and not `import zmq.asyncio`, which would make `zmq` a local name here)
        from zmq.asyncio import Context as AsyncContext

        ctx = AsyncContext.instance()
    sock = _make_req(ctx, endpoint)
    try:
        await sock.send(encode_call(op, req))
        if not await sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise PeerUnavailable(f"{endpoint} did not answer {op.name!r} within {timeout}s")
        raw = await sock.recv()
    finally:
        sock.close()
    return decode_answer(op, endpoint, raw)
