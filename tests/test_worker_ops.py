"""The worker's typed control ops (shared/ops/worker.py) on the real worker: its OpTable
binds every op of the WORKER registry and nothing else, and a real worker process
(`python -m fsguard_supervisor.roles worker`) fed real event batches answers each op
with its declared reply type, and refuses a request with a missing or mistyped field
with a 400 naming the field, over its real control socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from fsguard_workers.outbox import FirewallLink
from fsguard_workers.process import Worker
from shared import addresses
from shared.config import Config
from shared.control import ControlError, call
from shared.messages import ControlReply, pack_event_batch
from shared.ops import worker
from shared.ops.base import Empty
from shared.ops.common import LogLevelRequest, Ping, WhitelistEntry
from shared.ops.worker import WORKER, WorkerStats
from tests.control_helpers import raw_request
from tests.sofia_events import failure, wrong_call_state

ATTACKER = "203.0.113.50"
CALLER = "203.0.113.51"


def _config(run_dir: str) -> dict[str, Any]:
    return {
        "paths": {"runtime_dir": run_dir, "state_dir": os.path.join(run_dir, "state")},
        "workers": {"count": 1},
        "security": {"max_failed_attempts": 50, "max_wrong_call_states": 50},
        "logging": {"format": "human", "level": "info"},
    }


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fsg-wk-", dir="/tmp")  # ipc:// paths stay short
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_worker_table_binds_every_worker_op_and_nothing_else(run_dir: str) -> None:
    table = Worker(msgspec.convert(_config(run_dir), Config), 0).table()
    assert table.missing() == []
    assert set(table.handlers) | set(table.async_handlers) <= set(WORKER.names())


def test_worker_stats_has_a_field_for_every_counter(run_dir: str) -> None:
    """A counter the engine, the loop or the firewall link adds without a WorkerStats
    field would vanish from the reply (msgspec drops unknown keys): this catches it."""
    w = Worker(msgspec.convert(_config(run_dir), Config), 0)
    ctx: zmq.Context[Any] = zmq.Context()
    link = FirewallLink(ctx, run_dir, 0, w.engine.on_list_change, zmq.Poller(), shards=1)
    try:
        counters = {*w.engine.stats(), *w.engine.rule_stats(), *link.stats()}
        counters |= {"index", "pid", "processed", "events_by_name", "decisions_by_rule"}
        assert counters - set(WorkerStats.__struct_fields__) == set()
        w.link = link
        stats = w.stats()
        assert stats.index == 0 and stats.pid == os.getpid() and stats.list_snapshots == 0
    finally:
        link.close()
        ctx.destroy(linger=0)


class RealWorker:
    """`python -m fsguard_supervisor.roles worker --index 0`, fed through a PUSH socket
    bound where the supervisor's would be."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.control = addresses.worker_control(run_dir, 0)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.events = self.ctx.socket(zmq.PUSH)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.bind(addresses.worker_events(run_dir, 0))
        config_path = Path(run_dir) / "config.json"
        config_path.write_text(json.dumps(_config(run_dir)))
        self.log = open(Path(run_dir) / "worker.log", "wb")  # noqa: SIM115 (closed in stop)
        argv = [sys.executable, "-m", "fsguard_supervisor.roles", "worker",
                "--config", str(config_path), "--index", "0"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log)

    def wait_ready(self) -> Ping:
        deadline = time.monotonic() + 20
        while True:
            try:
                return call(self.control, worker.PING, Empty(), timeout=0.5, ctx=self.ctx)
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    def feed(self, bodies: list[bytes]) -> None:
        """One batch, in FreeSWITCH's compact JSON (the worker finds names by bytes)."""
        compact = [json.dumps(json.loads(b), separators=(",", ":")).encode() for b in bodies]
        self.events.send(pack_event_batch(time.time(), compact))

    def stats(self) -> WorkerStats:
        return call(self.control, worker.STATS, Empty(), ctx=self.ctx)

    def raw(self, op: str, args: dict[str, Any]) -> ControlReply:
        """One request as an untyped client sends it; the decoded reply."""
        return raw_request(self.control, op, args, ctx=self.ctx)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.events.close()
        self.ctx.destroy(linger=0)
        self.log.close()


@pytest.fixture
def real_worker(run_dir: str) -> Iterator[RealWorker]:
    w = RealWorker(run_dir)
    try:
        yield w
    finally:
        w.stop()


def test_a_real_worker_answers_every_op_with_its_type(real_worker: RealWorker) -> None:
    w = real_worker
    assert w.wait_ready() == Ping(role="worker", pid=w.proc.pid, index=0)
    w.feed([failure(ATTACKER) for _ in range(3)] + [wrong_call_state(CALLER)])
    deadline = time.monotonic() + 20
    while w.stats().processed < 4:
        assert time.monotonic() < deadline, "the worker never processed the batch"
        time.sleep(0.05)

    stats = w.stats()
    assert stats.index == 0 and stats.pid == w.proc.pid and stats.batches == 1
    assert stats.failed_registrations == 3 and stats.wrong_call_states == 1
    assert stats.events_by_name == {"sofia::register_failure": 3, "sofia::wrong_call_state": 1}
    failed = call(w.control, worker.FAILED, Empty(), ctx=w.ctx)
    assert list(failed) == [ATTACKER]
    assert failed[ATTACKER].count == 3 and failed[ATTACKER].userIds == ["1000"]
    wcs = call(w.control, worker.WRONG_CALL_STATES, Empty(), ctx=w.ctx)
    assert list(wcs) == [CALLER] and wcs[CALLER].count == 1
    assert call(w.control, worker.RATE_CALLS, Empty(), ctx=w.ctx) == {}
    assert call(w.control, worker.RATE_REGISTRATIONS, Empty(), ctx=w.ctx) == {}
    learned = call(w.control, worker.WHITELIST, Empty(), ctx=w.ctx)
    assert learned == {} and all(isinstance(e, WhitelistEntry) for e in learned.values())
    assert call(w.control, worker.SIMULATED, Empty(), ctx=w.ctx) == []

    gateways = worker.GatewaysRequest(addresses=["192.0.2.1", "not an address"])
    assert call(w.control, worker.GATEWAYS, gateways, ctx=w.ctx).protected == 1
    assert w.stats().protected_gateways == 1
    level = call(w.control, worker.LOG_LEVEL, LogLevelRequest(level="DEBUG"), ctx=w.ctx)
    assert level.level == "debug"


def test_a_real_worker_refuses_bad_requests_naming_the_field(real_worker: RealWorker) -> None:
    w = real_worker
    w.wait_ready()
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("gateways", {}, "`addresses`"),
        ("gateways", {"addresses": "192.0.2.1"}, "`$.addresses`"),
        ("gateways", {"addresses": [1, 2]}, "`$.addresses[0]`"),
        ("log_level", {}, "`level`"),
        ("log_level", {"level": 3}, "`$.level`"),
    ]
    for op, args, field in bad:
        reply = w.raw(op, args)
        assert reply.ok is False and reply.status == 400, (op, args, reply)
        assert op in reply.error and field in reply.error, (op, args, reply)
    unknown = w.raw("no_such_op", {})
    assert unknown.ok is False and unknown.status == 404
    # a value check the Struct cannot make stays in the handler: still a 400
    with pytest.raises(ControlError) as refused:
        call(w.control, worker.LOG_LEVEL, LogLevelRequest(level="loud"), ctx=w.ctx)
    assert refused.value.status == 400
    assert call(w.control, worker.GATEWAYS, worker.GatewaysRequest(addresses=[]),
                ctx=w.ctx).protected == 0  # fmt: skip
    assert w.proc.poll() is None and w.stats().protected_gateways == 0
