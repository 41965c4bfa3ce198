"""Asyncio inbound Event Socket client: connect, authenticate, subscribe, read, reconnect.

The read path is an asyncio.Protocol (esl_connection.EslConnection): every socket read
is framed at once and the JSON bodies of all events in it are handed to `on_events` in
one call. Replies are matched to commands in FIFO order (ESL answers every command
exactly once, in order; events may arrive in between). The client never raises out of
`run()`: every failure
is counted in `stats`, logged, and followed by a reconnect with capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from fsguard_supervisor.esl_commands import (
    ACL_MESSAGE,
    DEFAULT_EVENTS,
    EslCommandError,
    EslError,
    EslNotConnected,
    EslStats,
    _AclRejected,
    _AuthFailed,
    check_command,
    subscribe_command,
)
from fsguard_supervisor.esl_connection import MAX_PENDING, EslConnection
from fsguard_supervisor.esl_protocol import Frame
from shared.logs import LogRateLimiter

__all__ = [
    "DEFAULT_EVENTS",
    "MAX_PENDING",
    "EslClient",
    "EslCommandError",
    "EslError",
    "EslNotConnected",
    "EslStats",
    "check_command",
    "subscribe_command",
]

log = logging.getLogger("fsguard.esl")

READ_SIZE = 256 * 1024
UNEXPECTED_LOG_INTERVAL = 10.0


class EslClient:
    """Inbound ESL client with reconnect, FIFO reply matching and batched event delivery."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        on_events: Callable[[list[bytes], float], None],
        events: Sequence[str] = DEFAULT_EVENTS,
        on_connection_change: Callable[[bool], None] | None = None,
        base_backoff: float = 5.0,
        max_backoff: float = 60.0,
        connect_timeout: float = 5.0,
        heartbeat_interval: float = 20.0,
        liveness_intervals: int = 3,
        command_timeout: float = 10.0,
    ) -> None:
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in password):
            raise ValueError("the ESL password contains a control character")  # value not shown
        self.host = host
        self.port = port
        self._password = password
        self.on_events = on_events
        self.subscribe = subscribe_command(events)
        self.on_connection_change = on_connection_change
        self.base_backoff = max(0.0, base_backoff)
        self.max_backoff = max(self.base_backoff, max_backoff)
        self.connect_timeout = connect_timeout
        self.heartbeat_interval = heartbeat_interval
        self.liveness_intervals = max(1, liveness_intervals)
        self.command_timeout = command_timeout
        self.stats = EslStats()
        self.log_limiter = LogRateLimiter(UNEXPECTED_LOG_INTERVAL)
        self._conn: EslConnection | None = None
        self._ready = False  # authenticated and subscribed
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._failures = 0
        self._skip_backoff = False

    def __repr__(self) -> str:  # never show the password
        return f"EslClient({self.host}:{self.port})"

    # -- public API ------------------------------------------------------------------
    async def run(self) -> None:
        """Connect and keep the connection alive until `stop()`."""
        self._run_task = asyncio.current_task()
        self._wake = asyncio.Event()
        first = True
        while not self._stopping:
            if not first:
                self.stats.reconnects += 1
            first = False
            established = False
            try:
                established = await self._session()
            except asyncio.CancelledError:
                if self._stopping:
                    break
                raise
            except Exception as exc:  # never crash: count, log, back off
                self._record_failure(exc)
            if self._stopping:
                break
            self._failures = 1 if established else self._failures + 1
            if self._skip_backoff:
                self._skip_backoff = False
                continue
            delay = self._backoff_delay()
            log.info("reconnecting to FreeSWITCH ESL in %.2f s", delay)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def api(self, command: str, timeout: float | None = None) -> str:
        """Run `api <command>`; return the api/response body. -ERR raises EslCommandError."""
        check_command(command)
        frame = await self._command("api " + command, timeout)
        text = frame.body.decode("utf-8", "replace")
        if frame.content_type != "api/response":
            text = frame.header("Reply-Text") or text
        if text.startswith("-ERR"):
            raise EslCommandError(text)
        return text

    async def bgapi(self, command: str) -> str:
        """Run `bgapi <command>`; return its Job-UUID."""
        check_command(command)
        frame = await self._command("bgapi " + command, None)
        reply = frame.header("Reply-Text") or ""
        job = frame.header("Job-UUID")
        if not reply.startswith("+OK") or not job:
            raise EslCommandError(reply or "bgapi: no Job-UUID in reply")
        return job

    def request_reconnect(self) -> None:
        """Drop the current connection and reconnect at once."""
        self._skip_backoff = True
        if self._conn is not None:
            self._conn.close("reconnect requested")
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        """Close the connection and make `run()` return."""
        self._stopping = True
        if self._conn is not None:
            self._conn.close("client stopping")
        if self._wake is not None:
            self._wake.set()
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except TimeoutError:
                task.cancel()
            except Exception:  # run() failed in some unexpected way; stop anyway
                log.exception("ESL client run() ended with an error")

    # -- internals -------------------------------------------------------------------
    def _backoff_delay(self) -> float:
        """Capped exponential backoff with equal jitter (half fixed, half random)."""
        exp = min(self.max_backoff, self.base_backoff * 2.0 ** max(0, self._failures - 1))
        return exp / 2 + random.uniform(0, exp / 2)

    def _record_failure(self, exc: BaseException) -> None:
        self.stats.connection_errors += 1
        if isinstance(exc, _AuthFailed):
            self.stats.auth_failures += 1
            msg = "ESL authentication failed (-ERR invalid): check the ESL password"
        elif isinstance(exc, _AclRejected):
            self.stats.acl_rejections += 1
            msg = ACL_MESSAGE
        elif isinstance(exc, TimeoutError):
            msg = f"timeout talking to {self.host}:{self.port} ({exc or 'no answer'})"
        else:
            msg = f"{type(exc).__name__}: {exc}"
        self.stats.last_error = msg
        log.error("ESL %s:%s: %s", self.host, self.port, msg)

    async def _command(self, command: str, timeout: float | None) -> Frame:
        conn = self._conn
        if conn is None or not self._ready:
            raise EslNotConnected("not connected to FreeSWITCH ESL")
        fut = conn.send(command)
        return await asyncio.wait_for(fut, self.command_timeout if timeout is None else timeout)

    async def _until(self, conn: EslConnection, fut: asyncio.Future[Any], timeout: float) -> None:
        """Wait for `fut`, or fail if the connection closes first or time runs out."""
        done, _ = await asyncio.wait({fut, conn.closed}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if fut in done:
            fut.result()
            return
        if conn.acl_rejected:
            raise _AclRejected(ACL_MESSAGE)
        if conn.closed.done():
            raise EslNotConnected(conn.close_reason or "connection closed")
        raise TimeoutError("no answer from FreeSWITCH")

    async def _session(self) -> bool:
        """One connection's life. Returns True if it got as far as subscribed."""
        loop = asyncio.get_running_loop()
        self.stats.connection_attempts += 1
        conn = EslConnection(self)
        self._conn = conn
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, self.host, self.port),
                self.connect_timeout,
            )
        except TimeoutError:
            raise TimeoutError("connect timed out") from None
        assert conn.transport is not None
        conn.transport.set_write_buffer_limits(high=1 << 20)
        try:
            await self._until(conn, conn.greeting, self.connect_timeout)
            reply = await self._reply(conn, f"auth {self._password}")
            if (reply.header("Reply-Text") or "").startswith("-ERR"):
                raise _AuthFailed("authentication failed")
            reply = await self._reply(conn, self.subscribe)
            text = reply.header("Reply-Text") or ""
            if not text.startswith("+OK"):
                raise EslCommandError(f"subscription refused: {text}")
            self._ready = True
            self.stats.connected = True
            self.stats.last_error = ""
            log.info("ESL %s:%s connected and subscribed", self.host, self.port)
            self._notify(True)
            await self._watch(conn)
            reason = conn.close_reason or "connection closed"
            if not self._stopping:
                self.stats.connection_errors += 1
                self.stats.last_error = reason
                log.warning("ESL %s:%s: %s", self.host, self.port, reason)
            return True
        finally:
            was_ready = self._ready
            self._ready = False
            self.stats.connected = False
            conn.close(conn.close_reason or "session ended")
            conn._fail_pending()
            if self._conn is conn:
                self._conn = None
            if was_ready:
                self._notify(False)

    async def _reply(self, conn: EslConnection, command: str) -> Frame:
        fut = conn.send(command)
        await self._until(conn, fut, self.command_timeout)
        return fut.result()

    async def _watch(self, conn: EslConnection) -> None:
        """Wait for the connection to end; declare it dead after a silent period."""
        limit = self.heartbeat_interval * self.liveness_intervals
        loop = asyncio.get_running_loop()
        while not conn.closed.done():
            remaining = conn.last_rx + limit - loop.time()
            if remaining <= 0:
                conn.close(f"no data from FreeSWITCH for {limit:.1f} s (liveness timeout)")
                break
            await asyncio.wait({conn.closed}, timeout=remaining)
        await asyncio.wait({conn.closed}, timeout=1.0)

    def _notify(self, connected: bool) -> None:
        if self.on_connection_change is None:
            return
        try:
            self.on_connection_change(connected)
        except Exception:
            log.exception("on_connection_change callback failed")
