"""Raw control requests: what an untyped client puts on the wire.

The typed client (`shared.control.call`) cannot send a missing or wrongly typed field;
the tests that check every role refuses one with a 400 naming the field send it here.
"""

from __future__ import annotations

from typing import Any

import zmq

from shared.messages import ControlReply, ControlRequest, decode, encode


def raw_request(
    endpoint: str,
    op: str,
    args: dict[str, Any],
    *,
    timeout_ms: int = 5000,
    ctx: zmq.Context[Any] | None = None,
) -> ControlReply:
    """One request with arbitrary args on `endpoint`; the decoded reply (a test failure
    if none comes within timeout_ms)."""
    sock = (ctx or zmq.Context.instance()).socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(encode(ControlRequest(op=op, args=args)))
        assert sock.poll(timeout_ms, zmq.POLLIN), f"{endpoint} did not answer {op!r}"
        reply = decode(sock.recv())
    finally:
        sock.close()
    assert isinstance(reply, ControlReply)
    return reply
