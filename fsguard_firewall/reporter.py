"""chanDaemon ban reporting (Go facts §5), off by default.

Unlike the Go program (one goroutine per report, no retry, nothing persisted), reports go
through the store's outbox: a report survives a restart, is retried with capped
exponential backoff, and a ban key has at most one pending report. Sending uses a small
bounded thread pool driven by one background thread.

Delivery is at least once: a crash between the HTTP 2xx and `settle` re-sends that
report at the next start.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

from fsguard_firewall.store import OutboxItem, Store
from shared.config import ChanDaemonConfig

log = logging.getLogger(__name__)

MAX_SENDERS = 4  # concurrent POSTs at most
BATCH = 64  # reports taken from the outbox per round
INTERVAL = 1.0  # seconds between rounds when nothing wakes the thread
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class ReportRequest(msgspec.Struct, kw_only=True):
    ban_key: str
    ip: str
    reason: str
    ttl_seconds: float  # 0 = permanent
    from_user: str = ""


def check_url(url: str, key: str) -> str:
    """The URL if it is http(s) with a host and no whitespace/control characters."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or _CONTROL.search(url):
        raise ValueError(f"{key}: expected an http:// or https:// URL")
    return url


def safe_url(url: str) -> str:
    """URL for logs: scheme://host[:port]/path, without credentials or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """(URL without user:password@, request headers): userinfo becomes Basic auth, as Go's
    http.Client does; urllib would otherwise try to resolve it as part of the host."""
    headers = {"Content-Type": "application/json"}
    parts = urlsplit(url)
    if parts.username is None:
        return url, headers
    user = unquote(parts.username)
    password = unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers["Authorization"] = f"Basic {token}"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)), headers


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is a failure (status >= 300), never followed to another host."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def default_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoRedirect())


def make_payload(
    ip: str, reason: str, ttl_seconds: float, from_user: str, config: ChanDaemonConfig
) -> str:
    """The Go request body: ip, reason, ttl (whole seconds, 0 = permanent), blocker,
    service, and fromUser unless empty or "unknown"."""
    ttl = int(ttl_seconds) if math.isfinite(ttl_seconds) and ttl_seconds > 0 else 0
    body: dict[str, Any] = {
        "ip": ip,
        "reason": reason,
        "ttl": ttl,
        "blocker": config.blocker_url,
        "service": config.service_name,
    }
    if from_user and from_user != "unknown":
        body["fromUser"] = from_user
    return msgspec.json.encode(body).decode()


class Reporter:
    """Queue ban reports in the store outbox and deliver them to `report_url`."""

    def __init__(
        self,
        store: Store,
        config: ChanDaemonConfig,
        *,
        clock: Callable[[], float] = time.time,
        opener: urllib.request.OpenerDirector | None = None,
        interval: float = INTERVAL,
    ) -> None:
        self.store = store
        self.config = config
        self.enabled = config.enabled and bool(config.report_url)
        if self.enabled:
            check_url(config.report_url, "security.chandaemon.report_url")
            if config.blocker_url:
                check_url(config.blocker_url, "security.chandaemon.blocker_url")
        self._url, self._headers = split_credentials(config.report_url)
        self.clock = clock
        self.opener = opener or default_opener()
        self.interval = interval
        self.sent = 0  # reports accepted (HTTP < 300)
        self.failed = 0  # failed attempts (each is retried with backoff)
        self.dropped = 0  # not queued (outbox full) or given up after max_attempts
        self.duplicates = 0  # not queued: a report for the same ban is pending
        self._counts = threading.Lock()
        self._round = threading.Lock()  # one run_once at a time: no double send
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    @property
    def pending(self) -> int:
        return self.store.pending_count() if self.enabled else 0

    def stats(self) -> dict[str, int]:
        """The Go counters (always present; 0 when reporting is off) plus fsguard's."""
        return {
            "reportsSent": self.sent,
            "reportsFailed": self.failed,
            "reportsPending": self.pending,
            "reportsDropped": self.dropped,
        }

    # --- producer side (firewall loop) ------------------------------------------------

    def report_ban(
        self, ban_key: str, ip: str, reason: str, ttl_seconds: float, from_user: str = ""
    ) -> bool:
        """Queue one report; False when off, already pending for this ban, or full."""
        return (
            self.report_bans(
                [
                    ReportRequest(
                        ban_key=ban_key,
                        ip=ip,
                        reason=reason,
                        ttl_seconds=ttl_seconds,
                        from_user=from_user,
                    )
                ]
            )
            == 1
        )

    def payload_for(self, ban_key: str, reason: str, ttl_seconds: float, from_user: str) -> str:
        """The request body for one ban (the store queues it with the ban itself)."""
        return make_payload(ban_key, reason, ttl_seconds, from_user, self.config)

    def queued(self, count: int, dropped: int = 0) -> None:
        """Reports were queued by the store (Store.add_bans_reported): wake the sender."""
        with self._counts:
            self.dropped += dropped
        if count:
            self._wake.set()

    def report_bans(self, requests: Sequence[ReportRequest]) -> int:
        """Queue a batch in one transaction of its own; returns how many were queued.

        For reports of bans that already exist. The firewall queues a new ban's report in
        the ban's own transaction instead (Store.add_bans_reported + `queued`)."""
        if not self.enabled or not requests:
            return 0
        items = list(
            {
                r.ban_key: make_payload(r.ip, r.reason, r.ttl_seconds, r.from_user, self.config)
                for r in requests
            }.items()
        )
        already = sum(1 for key, _ in items if self.store.is_pending(key))
        queued = self.store.enqueue_many(items, self.clock())
        with self._counts:
            self.duplicates += already + (len(requests) - len(items))
            self.dropped += len(items) - already - queued
        if queued:
            self._wake.set()
        return queued

    # --- delivery ----------------------------------------------------------------------

    def _post(self, payload: str) -> str | None:
        """POST one report; None on success, else a short error (never the URL)."""
        request = urllib.request.Request(
            self._url, data=payload.encode(), headers=self._headers, method="POST"
        )
        try:
            with self.opener.open(request, timeout=self.config.report_timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            return f"transport: {type(exc.reason).__name__}"
        except (OSError, ValueError) as exc:  # timeouts are OSError (TimeoutError)
            return f"transport: {type(exc).__name__}"
        except Exception as exc:  # http.client.HTTPException and the like
            return f"protocol: {type(exc).__name__}"
        return None if status < 300 else f"HTTP {status}"

    def run_once(self, now: float) -> int:
        """Send the reports due at `now` (at most BATCH); returns how many were accepted."""
        if not self.enabled:
            return 0
        with self._round:
            items = self.store.due(now, BATCH)
            if not items:
                return 0
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MAX_SENDERS, thread_name_prefix="chandaemon")
            results = list(self._pool.map(lambda item: self._post(item.payload), items))
            sent = [item.id for item, err in zip(items, results, strict=True) if err is None]
            failures: list[tuple[OutboxItem, str]] = [
                (item, err) for item, err in zip(items, results, strict=True) if err is not None
            ]
            gave_up = self.store.settle(sent, [(i.id, e) for i, e in failures], self.clock())
        with self._counts:
            self.sent += len(sent)
            self.failed += len(failures)
            self.dropped += gave_up
        for item, err in failures:
            log.warning(
                "chanDaemon report for %s failed (attempt %d): %s; url=%s",
                item.ban_key,
                item.attempts + 1,
                err,
                safe_url(self.config.report_url),
            )
        if gave_up:
            log.error("chanDaemon: dropped %d reports after too many attempts", gave_up)
        return len(sent)

    # --- background thread -------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        log.info(
            "chanDaemon reporting to %s (blocker %s, service %s)",
            safe_url(self.config.report_url),
            safe_url(self.config.blocker_url) if self.config.blocker_url else "none",
            self.config.service_name,
        )
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="chandaemon", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(self.clock())
            except Exception:
                log.exception("chanDaemon reporter round failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def stop(self) -> None:
        """Stop the thread; pending reports stay in the outbox for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.report_timeout * 2 + 1)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
