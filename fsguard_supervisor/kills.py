"""Workers' `uuid_kill` requests for over-limit calls, run with a bounded fan-out.

A flood of over-limit calls must not become a flood of tasks and pending ESL replies:
requests wait in a bounded queue and a fixed number of kill workers run them (so at most
`KILL_CONCURRENCY` `uuid_kill` commands are pending on the ESL connection at once). A
request arriving while the queue is full is dropped and counted (`kills_dropped`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from fsguard_supervisor.tasks import TaskSupervisor
from shared.audit import AuditLog
from shared.logs import LogRateLimiter, escape
from shared.messages import KillCall

log = logging.getLogger("fsguard_supervisor.process")

# Channel UUIDs are FreeSWITCH-generated; anything else never reaches the ESL socket.
UUID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
KILL_QUEUE_MAX = 1024
KILL_CONCURRENCY = 8


class KillQueue:
    """Bounded queue of KillCall requests and the workers that send them to FreeSWITCH."""

    def __init__(
        self,
        api: Callable[[str], Awaitable[str]],
        audit: Callable[[], AuditLog],
        limiter: LogRateLimiter,
        *,
        maxsize: int = KILL_QUEUE_MAX,
        concurrency: int = KILL_CONCURRENCY,
    ) -> None:
        self._api = api
        self._audit = audit
        self._limiter = limiter
        self.concurrency = concurrency
        self.queue: asyncio.Queue[KillCall] = asyncio.Queue(maxsize)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def start(self, tasks: TaskSupervisor) -> None:
        for index in range(self.concurrency):
            tasks.start(f"kill-{index}", self._worker)

    def submit(self, msg: KillCall) -> bool:
        """Queue a kill; False (counted, logged rate-limited) when the queue is full."""
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped += 1
            if self._limiter.allow("uuid_kill dropped"):
                log.warning("uuid_kill queue full (%d waiting): dropping the kill of %s",
                            self.queue.qsize(), escape(msg.uuid, 64))
            return False
        return True

    async def _worker(self) -> None:
        while True:
            msg = await self.queue.get()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await self.kill(msg)
            finally:
                self.in_flight -= 1
                self.queue.task_done()

    async def kill(self, msg: KillCall) -> None:
        audit = self._audit()
        actor = f"rule:{msg.reason}"
        if not UUID_RE.match(msg.uuid):
            if self._limiter.allow("malformed uuid_kill"):
                log.warning("refusing uuid_kill for malformed uuid %s", escape(msg.uuid))
            self.failed += 1
            audit.record("esl_command", actor=actor, target=f"uuid_kill {msg.uuid}",
                         outcome="refused: malformed uuid")
            return
        command = f"uuid_kill {msg.uuid}"
        try:
            reply = await self._api(command)
        except Exception as exc:
            self.failed += 1
            if self._limiter.allow("uuid_kill failed"):
                log.warning("uuid_kill %s failed: %s", msg.uuid, exc)
            audit.record("esl_command", actor=actor, target=command, outcome=f"failed: {exc}")
            return
        if reply.startswith("-ERR"):
            self.failed += 1
            if self._limiter.allow("uuid_kill refused"):
                log.warning("uuid_kill %s refused: %s", msg.uuid, escape(reply.strip()))
            audit.record("esl_command", actor=actor, target=command,
                         outcome=f"refused: {reply.strip()[:200]}")
        else:
            self.sent += 1
            if self._limiter.allow("terminated call"):
                log.info("terminated %s call %s", escape(msg.reason), msg.uuid)
            audit.record("esl_command", actor=actor, target=command, outcome="ok")
