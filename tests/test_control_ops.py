"""The typed control plane's machinery (shared/ops/base.py, shared/control.py) over a real
ZeroMQ REQ/REP socket: a request Struct in, the op's reply type out, and every way a call
can go wrong answered with its status."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from shared.control import (
    ControlError,
    PeerReplyInvalid,
    PeerUnavailable,
    acall,
    adispatch,
    call,
    dispatch,
)
from shared.messages import ControlRequest, encode
from shared.ops import firewall, supervisor, worker
from shared.ops.base import Empty, OpTable, Registry
from shared.ops.common import Ping


class Add(msgspec.Struct, frozen=True, kw_only=True):
    a: int
    b: int = 0


class Sum(msgspec.Struct, frozen=True, kw_only=True):
    total: int


REG = Registry("worker")
ADD = REG.op("add", Add, Sum)
NAMES = REG.op("names", Empty, list[str])
BROKEN = REG.op("broken", Empty, Sum)
LIAR = REG.op("liar", Empty, Sum)
REFUSE = REG.op("refuse", Add, Sum)
SLOW_ADD = REG.op("slow_add", Add, Sum)


def refuse(req: Add) -> Sum:
    raise ControlError(f"{req.a} is not welcome", 409)


def broken(req: Empty) -> Sum:
    raise RuntimeError("handler bug")


def table() -> OpTable:
    t = OpTable(REG)
    t.bind(ADD, lambda r: Sum(total=r.a + r.b))
    t.bind(NAMES, lambda r: ["a", "b"])
    t.bind(BROKEN, broken)
    t.bind(LIAR, lambda r: {"total": "not a number"})  # type: ignore[arg-type,return-value]
    t.bind(REFUSE, refuse)

    async def slow_add(r: Add) -> Sum:
        await asyncio.sleep(0)
        return Sum(total=r.a + r.b)

    t.bind_async(SLOW_ADD, slow_add)
    return t


def _serve(endpoint: str, stop: threading.Event, ready: threading.Event) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(endpoint)
    ready.set()
    t = table()
    loop = asyncio.new_event_loop()
    try:
        while not stop.is_set():
            if sock.poll(20, zmq.POLLIN):
                raw = sock.recv()
                sock.send(loop.run_until_complete(adispatch(t, raw)))
    finally:
        loop.close()
        sock.close(linger=0)
        ctx.term()


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[str]:
    ep = f"ipc://{tmp_path}/ctl"
    stop, ready = threading.Event(), threading.Event()
    th = threading.Thread(target=_serve, args=(ep, stop, ready), daemon=True)
    th.start()
    assert ready.wait(5)
    yield ep
    stop.set()
    th.join(5)


def test_a_typed_round_trip_sync_and_async(endpoint: str) -> None:
    assert call(endpoint, ADD, Add(a=2, b=3)) == Sum(total=5)
    assert call(endpoint, NAMES, Empty()) == ["a", "b"]
    assert call(endpoint, SLOW_ADD, Add(a=4)) == Sum(total=4)
    assert asyncio.run(acall(endpoint, ADD, Add(a=1, b=1))) == Sum(total=2)


def test_a_request_missing_a_field_is_a_400_naming_it(endpoint: str) -> None:
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.connect(endpoint)
    sock.send(encode(ControlRequest(op="add", args={"b": 1})))
    raw = sock.recv()
    sock.close(linger=0)
    reply = msgspec.msgpack.decode(raw)
    assert reply["ok"] is False and reply["status"] == 400
    assert "add" in reply["error"] and "`a`" in reply["error"]


def test_refusals_bugs_unknown_ops_and_bad_replies(endpoint: str) -> None:
    with pytest.raises(ControlError) as refused:
        call(endpoint, REFUSE, Add(a=7))
    assert refused.value.status == 409 and "7 is not welcome" in str(refused.value)
    with pytest.raises(ControlError) as bug:
        call(endpoint, BROKEN, Empty())
    assert bug.value.status == 500
    other = Registry("worker").op("nobody", Empty, Sum)
    with pytest.raises(ControlError) as unknown:
        call(endpoint, other, Empty())
    assert unknown.value.status == 404
    with pytest.raises(PeerReplyInvalid, match="liar"):
        call(endpoint, LIAR, Empty())
    assert call(endpoint, ADD, Add(a=1)) == Sum(total=1)  # the server lived through all that


def test_a_request_of_the_wrong_type_never_leaves_the_client(endpoint: str) -> None:
    # mypy refuses this call too (the ignore below): the runtime check is for untyped callers
    with pytest.raises(TypeError, match="add takes Add"):
        call(endpoint, ADD, Empty())  # type: ignore[misc]


def test_no_answer_is_peer_unavailable(tmp_path: Path) -> None:
    with pytest.raises(PeerUnavailable):
        call(f"ipc://{tmp_path}/nobody", ADD, Add(a=1), timeout=0.2)


def test_a_table_binds_only_its_registry_and_each_op_once() -> None:
    t = OpTable(REG)
    with pytest.raises(ValueError, match="not in the worker registry"):
        t.bind(firewall.PING, lambda r: Ping(role="x", pid=1))
    t.bind(ADD, lambda r: Sum(total=0))
    with pytest.raises(ValueError, match="bound twice"):
        t.bind(ADD, lambda r: Sum(total=0))
    assert "names" in t.missing() and "add" not in t.missing()
    with pytest.raises(ValueError, match="declared twice"):
        REG.op("add", Add, Sum)


def test_sync_dispatch_answers_an_async_only_op_as_unknown() -> None:
    raw = encode(ControlRequest(op="slow_add", args={"a": 1}))
    reply: dict[str, Any] = msgspec.msgpack.decode(dispatch(table(), raw))
    assert reply["status"] == 404


def test_every_role_registry_declares_ping_and_log_level() -> None:
    for registry in (firewall.FIREWALL, worker.WORKER, supervisor.SUPERVISOR):
        assert {"ping", "log_level"} <= set(registry.names())
