"""EslClient against the fake FreeSWITCH over real TCP: the harness the ESL tests share
(test_esl_client, test_esl_desync, test_supervisor_bounds)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fsguard_cli.simulator import FakeFreeSwitch, register_failure
from fsguard_supervisor.esl_client import EslClient


class Sink:
    """Collects on_events batches and connection changes."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[bytes], float]] = []
        self.changes: list[bool] = []

    def on_events(self, bodies: list[bytes], ts: float) -> None:
        self.batches.append((list(bodies), ts))

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(b) for batch, _ in self.batches for b in batch]


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@asynccontextmanager
async def running(
    sim: FakeFreeSwitch, password: str = "ClueCon", **kw: Any
) -> AsyncIterator[tuple[EslClient, Sink]]:
    sink = Sink()
    kw.setdefault("base_backoff", 0.05)
    kw.setdefault("max_backoff", 0.2)
    client = EslClient("127.0.0.1", sim.port, password, on_events=sink.on_events,
                       on_connection_change=sink.changes.append, **kw)
    task = asyncio.create_task(client.run())
    try:
        yield client, sink
    finally:
        await client.stop()
        await asyncio.wait_for(task, 5)


@asynccontextmanager
async def subscribed(
    sim: FakeFreeSwitch | None = None, **client_kw: Any
) -> AsyncIterator[tuple[FakeFreeSwitch, EslClient, Sink]]:
    """`sim` (not started yet; a default FakeFreeSwitch when None) started, and a client
    that has subscribed to it. On exit the client stops, then the switch."""
    sim = sim or FakeFreeSwitch()
    await sim.start()
    try:
        async with running(sim, **client_kw) as (client, sink):
            assert await sim.wait_for_subscription(5)
            yield sim, client, sink
    finally:
        await sim.stop()


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


async def started(**kw: Any) -> FakeFreeSwitch:
    sim = FakeFreeSwitch(**kw)
    await sim.start()
    return sim


class InterleavingSwitch(FakeFreeSwitch):
    """Sends events between receiving each api command and answering it; with `hold`
    set to an Event, answers no command before it is set."""

    hold: asyncio.Event | None = None

    async def on_api(self, command: str) -> None:
        if self.hold is not None:
            await self.hold.wait()
        await self.send_event(register_failure("203.0.113.200", user=command))

    def release(self) -> None:
        """Answer the held commands (and every later one at once)."""
        if self.hold is not None:
            self.hold.set()


def held_switch(api_responses: dict[str, str]) -> InterleavingSwitch:
    """An InterleavingSwitch (not started) that holds every answer until `release()`."""
    sim = InterleavingSwitch(api_responses=api_responses)
    sim.hold = asyncio.Event()
    return sim
