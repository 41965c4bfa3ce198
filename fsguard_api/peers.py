"""Gateway from the API to the control sockets of supervisor, workers and firewall.

Every call is bounded: `arequest` times out on the reply, and the whole call is also
wrapped in `asyncio.wait_for`, so no HTTP request can hang on a dead or slow peer.
Failures surface as PeerError carrying the HTTP status the API answers with.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zmq.asyncio

from shared import addresses
from shared.control import ControlError, PeerUnavailable, acall
from shared.ops.base import Op, RepT, ReqT

DEFAULT_TIMEOUT = 2.0
_GRACE = 0.5  # extra time for the outer wait_for, beyond the reply timeout


class PeerError(Exception):
    """A peer call failed; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Peers:
    """Control clients for one runtime directory. One zmq context, a fresh REQ per call."""

    def __init__(self, runtime_dir: str, workers: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.runtime_dir = runtime_dir
        self.workers = workers
        self.timeout = timeout
        self._ctx = zmq.asyncio.Context()

    def _endpoint(self, op: Op[Any, Any], index: int) -> tuple[str, str]:
        rd = self.runtime_dir
        if op.role == "supervisor":
            return "supervisor", addresses.supervisor_control(rd)
        if op.role == "firewall":
            return "firewall", addresses.firewall_control(rd)
        if not 0 <= index < self.workers:
            raise ValueError(f"worker op {op.name!r} needs a worker index 0..{self.workers - 1}")
        return f"worker {index}", addresses.worker_control(rd, index)

    async def ask(self, op: Op[ReqT, RepT], req: ReqT, index: int = -1) -> RepT:
        """One typed call to op's role (a worker's needs its index); raises PeerError
        (peer down or refusing) or PeerReplyInvalid (a reply not of op's type)."""
        peer, endpoint = self._endpoint(op, index)
        try:
            return await asyncio.wait_for(
                acall(endpoint, op, req, timeout=self.timeout, ctx=self._ctx),
                timeout=self.timeout + _GRACE,
            )
        except (PeerUnavailable, TimeoutError) as exc:
            raise PeerError(f"{peer} unavailable: no answer to {op.name!r}", 503) from exc
        except ControlError as exc:
            raise PeerError(str(exc), exc.status) from exc

    async def ask_workers(self, op: Op[ReqT, RepT], req: ReqT) -> list[RepT]:
        """Scatter one op to every worker concurrently; any failure fails the whole call."""
        return list(await asyncio.gather(*(self.ask(op, req, i) for i in range(self.workers))))

    def close(self) -> None:
        self._ctx.destroy(linger=0)
