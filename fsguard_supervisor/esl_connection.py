"""One inbound Event Socket TCP connection as an asyncio.Protocol.

Every socket read is framed at once; the JSON bodies of all events in it go to the
client's `on_events` in one call. Replies are matched to commands in FIFO order (ESL
answers every command exactly once, in order; events may arrive in between).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from fsguard_supervisor.esl_commands import ACL_MESSAGE, EslError, EslNotConnected
from fsguard_supervisor.esl_protocol import (
    CT_EVENT_PLAIN,
    Frame,
    FrameParser,
    ProtocolError,
    plain_to_json,
)

if TYPE_CHECKING:
    from fsguard_supervisor.esl_client import EslClient

log = logging.getLogger("fsguard.esl")

# Replies still owed by FreeSWITCH on one connection (a timed-out command keeps its slot
# until its reply arrives). Over this, a command fails at once instead of queueing.
MAX_PENDING = 64


class EslConnection(asyncio.Protocol):
    """One TCP connection: frames bytes, routes frames, owns the pending-reply FIFO."""

    def __init__(self, client: EslClient) -> None:
        self.client = client
        self.parser = FrameParser()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.greeting: asyncio.Future[None] = loop.create_future()
        self.pending: deque[asyncio.Future[Frame]] = deque()
        self.last_rx = loop.time()
        self.close_reason = ""
        self.acl_rejected = False
        self._loop = loop

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        client = self.client
        stats = client.stats
        self.last_rx = self._loop.time()
        stats.bytes_received += len(data)
        try:
            bodies, frames = self.parser.feed_events(data)
        except ProtocolError as exc:
            stats.malformed_frames += 1
            self.close(f"malformed ESL frame: {exc}")
            log.error("malformed ESL frame from FreeSWITCH, resynchronising: %s", exc)
            bodies, frames = exc.events, exc.frames
        stats.frames_received += len(bodies) + len(frames)
        if frames:
            for frame in frames:
                ct = frame.content_type
                if ct == CT_EVENT_PLAIN:
                    try:
                        bodies.append(plain_to_json(frame.body))
                    except Exception:  # attacker-influenced bytes: never crash
                        stats.malformed_frames += 1
                        log.warning("dropped an undecodable text/event-plain frame")
                else:
                    self._route(frame)
        if bodies:
            stats.events_received += len(bodies)
            try:
                client.on_events(bodies, time.time())
            except Exception:
                log.exception("on_events callback failed")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.close_reason:
            self.close_reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        self._fail_pending()
        if not self.closed.done():
            self.closed.set_result(None)

    # -- routing ---------------------------------------------------------------------
    def _route(self, frame: Frame) -> None:
        ct = frame.content_type
        if ct in ("command/reply", "api/response"):
            if not self.pending:
                self.client.stats.unexpected_replies += 1
                if self.client.log_limiter.allow("unexpected reply"):
                    log.warning(
                        "unexpected %s with no command pending (%d so far)",
                        ct,
                        self.client.stats.unexpected_replies,
                    )
                return
            fut = self.pending.popleft()
            if not fut.done():  # a timed-out command keeps its slot: its reply is dropped
                fut.set_result(frame)
        elif ct == "auth/request":
            if not self.greeting.done():
                self.greeting.set_result(None)
        elif ct == "text/disconnect-notice":
            if frame.header("Content-Disposition") != "linger":
                text = frame.body.decode("utf-8", "replace").strip().replace("\n", " ")
                self.close(f"disconnect-notice from FreeSWITCH: {text[:200]}")
        elif ct == "text/rude-rejection":
            self.acl_rejected = True
            self.close("rude-rejection: " + ACL_MESSAGE)
        # log/data, event-xml, anything else: counted, ignored

    def _fail_pending(self) -> None:
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(EslNotConnected(self.close_reason or "ESL connection lost"))

    # -- commands --------------------------------------------------------------------
    def send(self, command: str) -> asyncio.Future[Frame]:
        """Queue a reply slot and write `command` (already validated)."""
        if self.transport is None or self.transport.is_closing() or self.closed.done():
            raise EslNotConnected("ESL connection is not open")
        if len(self.pending) >= MAX_PENDING:
            self.client.stats.commands_refused += 1
            raise EslError(f"{MAX_PENDING} ESL replies already pending; command refused")
        fut: asyncio.Future[Frame] = self._loop.create_future()
        self.pending.append(fut)
        self.transport.write(command.encode("utf-8") + b"\n\n")
        return fut

    def close(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        if self.transport is not None:
            self.transport.abort()
