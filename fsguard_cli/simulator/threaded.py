"""`FakeFreeSwitch` on its own event-loop thread, for synchronous tests and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .events import EventLike
from .server import FakeFreeSwitch

T = TypeVar("T")


class ThreadedFakeFreeSwitch:
    """`FakeFreeSwitch` on its own event loop thread, for synchronous tests."""

    def __init__(self, server: FakeFreeSwitch | None = None) -> None:
        """Run `server` (a default FakeFreeSwitch when None): its options are set there,
        so the two classes cannot drift apart."""
        self.server = server if server is not None else FakeFreeSwitch()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-freeswitch",
                                        daemon=True)
        self._thread.start()
        self._call(self.server.start())

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self.server.stop(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> ThreadedFakeFreeSwitch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def commands(self) -> list[str]:
        return list(self.server.commands)

    @property
    def connected_clients(self) -> int:
        return self.server.connected_clients

    @property
    def connections_total(self) -> int:
        return self.server.connections_total

    @property
    def subscriptions_total(self) -> int:
        return self.server.subscriptions_total

    def send_event(self, headers: Sequence[tuple[str, str]], body: bytes = b"") -> int:
        return self._call(self.server.send_event(headers, body))

    def send_events(self, events: Iterable[EventLike]) -> int:
        return self._call(self.server.send_events(list(events)))

    def replay(
        self,
        source: str | Path | bytes,
        *,
        rewrite_ip: str | Mapping[str, str] | None = None,
        speed: float | None = None,
    ) -> int:
        return self._call(self.server.replay(source, rewrite_ip=rewrite_ip, speed=speed),
                          timeout=3600)

    def kill_connections(self) -> None:
        self._call(self.server.kill_connections())

    def send_disconnect_notice(self) -> None:
        self._call(self.server.send_disconnect_notice())

    def go_silent(self) -> None:
        self._call(self.server.go_silent())

    def send_raw(self, data: bytes) -> None:
        self._call(self.server.send_raw(data))

    def wait_for_client(self, timeout: float = 5.0) -> bool:
        return self._call(self.server.wait_for_client(timeout), timeout + 5)

    def wait_for_subscription(self, timeout: float = 5.0, count: int = 1) -> bool:
        return self._call(self.server.wait_for_subscription(timeout, count), timeout + 5)
