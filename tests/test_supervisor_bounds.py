"""Nothing in the supervisor grows without bound (issue 10 §5): the event queue in bytes,
the kill fan-out and its pending ESL replies. Real ZeroMQ sockets, the real ESL client
against the fake FreeSWITCH over TCP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import zmq

from fsguard_supervisor.dispatcher import EventDispatcher
from fsguard_supervisor.kills import KILL_CONCURRENCY, KillQueue
from fsguard_supervisor.tasks import TaskSupervisor
from shared import addresses
from shared.audit import AuditLog
from shared.config import config_from_dict
from shared.logs import LogRateLimiter
from shared.messages import KillCall, unpack_event_batch
from tests.esl_helpers import InterleavingSwitch, run, running, until


def _body(i: int, size: int) -> bytes:
    return json.dumps({"Event-Name": "CUSTOM", "network-ip": f"192.0.2.{i % 250}",
                       "pad": "x" * size}).encode()  # fmt: skip


def test_the_event_queue_is_bounded_in_bytes(tmp_path: Path) -> None:
    cfg = config_from_dict({"workers": {"queue_bytes": 1 << 20}})
    ctx: zmq.Context[Any] = zmq.Context()
    dispatcher = EventDispatcher(ctx, str(tmp_path), 1, cfg.workers.queue_size,
                                 cfg.workers.queue_bytes)  # fmt: skip
    worker = ctx.socket(zmq.PULL)  # a worker that is connected but not reading (stuck)
    worker.connect(addresses.worker_events(str(tmp_path), 0))
    try:
        assert worker.poll(0) == 0
        reads = [[_body(i * 100 + j, 2000) for j in range(100)] for i in range(40)]  # ~200 KiB
        for _ in range(1000):  # the pipe to the worker attaches asynchronously
            dispatcher.dispatch(reads[0], 0.0)
            if dispatcher.sent[0]:
                break
        warmup = dispatcher.sent[0]
        assert warmup == 100
        dispatcher.reset_worker(0)
        dispatcher.dropped[0] = dispatcher.dropped_over_bytes[0] = 0
        for batch in reads:  # ~8 MiB offered, far below the 8192-message HWM
            dispatcher.dispatch(batch, 1.0)
        assert dispatcher.in_flight_bytes[0] <= 1 << 20
        assert dispatcher.dropped_over_bytes[0] > 0
        assert dispatcher.sent[0] + dispatcher.dropped[0] == 40 * 100
        # the worker processes what it got: the bytes are released, sending resumes
        dispatcher.acknowledge(0, dispatcher.sent[0])
        assert dispatcher.in_flight_bytes[0] == 0
        sent_before = dispatcher.sent[0]
        dispatcher.dispatch(reads[0], 2.0)
        assert dispatcher.sent[0] == sent_before + 100
        got = 0
        while worker.poll(2000):
            got += len(unpack_event_batch(worker.recv())[1])
        assert got == warmup + dispatcher.sent[0]  # what was counted as sent arrives whole
    finally:
        worker.close(0)
        dispatcher.close()
        ctx.term()


def test_kills_are_bounded_in_fan_out_and_in_pending_replies() -> None:
    async def scenario() -> None:
        sim = InterleavingSwitch(api_responses={})
        sim.hold = asyncio.Event()  # FreeSWITCH does not answer yet
        await sim.start()
        async with running(sim) as (client, _):
            assert await sim.wait_for_subscription(5)
            kills = KillQueue(client.api, lambda: AuditLog.null(), LogRateLimiter(10.0),
                              maxsize=100)  # fmt: skip
            tasks = TaskSupervisor()
            kills.start(tasks)
            accepted = sum(kills.submit(KillCall(uuid=f"u-{i}", reason="rate_limit"))
                           for i in range(5000))  # fmt: skip
            assert await until(lambda: kills.in_flight == KILL_CONCURRENCY)
            await asyncio.sleep(0.2)
            assert kills.max_in_flight == KILL_CONCURRENCY  # never one task per kill
            assert client._conn is not None and len(client._conn.pending) <= KILL_CONCURRENCY
            assert accepted == 100  # submitted before any worker ran: the queue's bound
            assert kills.dropped == 5000 - accepted
            sim.hold.set()
            assert await until(lambda: kills.sent + kills.failed == accepted, 20)
            assert sim.commands.count("api uuid_kill u-0") == 1
            await tasks.cancel_all()
        await sim.stop()

    run(scenario)
