"""The supervisor's background tasks, supervised: a task that raises is logged and restarted.

An asyncio task that nobody awaits ends silently when it raises. The supervisor's loops
(the child reaper, the worker-count refresh, the control and action sockets, the ESL
client, the kill workers) must never end that way: an `OSError` from `Popen` or a
`ZMQError` such as EMFILE would stop every child restart while the process looks healthy.
`TaskSupervisor.start` runs a loop factory again after any exception, with a capped
backoff, logs each failure with its traceback and counts it per task name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shared.ops.supervisor import TaskStats

log = logging.getLogger(__name__)

RESTART_DELAY_MIN = 0.1
RESTART_DELAY_MAX = 5.0
STABLE_AFTER = 30.0  # a run that lasted this long resets the backoff


class TaskSupervisor:
    """Owns a set of named long-running coroutines and restarts the ones that fail."""

    def __init__(
        self, min_delay: float = RESTART_DELAY_MIN, max_delay: float = RESTART_DELAY_MAX
    ) -> None:
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.failures: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `factory()` until it returns; after an exception, log and run it again."""
        task = asyncio.get_running_loop().create_task(self._run(name, factory), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        delay = self.min_delay
        while True:
            started = time.monotonic()
            try:
                await factory()
                return  # a loop that returns was asked to stop (e.g. the ESL client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures[name] = self.failures.get(name, 0) + 1
                self.last_error[name] = f"{type(exc).__name__}: {exc}"[:300]
                if time.monotonic() - started >= STABLE_AFTER:
                    delay = self.min_delay
                log.error(
                    "background task %s failed (%d so far): %s; restarting in %.1fs",
                    name, self.failures[name], self.last_error[name], delay,
                    exc_info=True, extra={"task": name},
                )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    @property
    def running(self) -> list[str]:
        return sorted(t.get_name() for t in self._tasks if not t.done())

    def snapshot(self) -> TaskStats:
        return TaskStats(running=self.running, failures=dict(self.failures),
                         last_error=dict(self.last_error))  # fmt: skip

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
