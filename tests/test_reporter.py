"""fsguard_firewall.reporter against a real local HTTP server and a real SQLite store."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fsguard_firewall.reporter import Reporter, make_payload, safe_url
from fsguard_firewall.store import Store
from shared.config import ChanDaemonConfig
from tests.engine_harness import Clock
from tests.system_helpers import wait_for

TIMEOUT = 0.3


class ChanDaemon(ThreadingHTTPServer):
    """Fake chanDaemon: answers with `mode` ("500", "hang", "200", "302")."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "200"
        self.requests: list[tuple[str, dict[str, Any], str]] = []  # (mode, body, content type)
        self.auth: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v1/ip-bans/report"

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for mode, body, _ in self.requests if mode == "200"]


class Handler(BaseHTTPRequestHandler):
    server: ChanDaemon

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        mode = self.server.mode
        with self.server.lock:
            self.server.requests.append((mode, body, self.headers.get("Content-Type", "")))
            self.server.auth.append(self.headers.get("Authorization", ""))
        if mode == "hang":
            self.server.release.wait(10 * TIMEOUT)
            mode = "200"  # too late: the client has given up
        if mode == "302":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        else:
            self.send_response(int(mode))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ChanDaemon]:
    srv = ChanDaemon()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "fsguard.db"), backoff_base=1.0, backoff_cap=8.0)
    yield s
    s.close()


def config(url: str, **kw: Any) -> ChanDaemonConfig:
    return ChanDaemonConfig(
        enabled=True,
        report_url=url,
        blocker_url="http://198.51.100.10:8088",
        report_timeout=TIMEOUT,
        **kw,
    )


BANS = [
    ("203.0.113.50", "Exceeded max failed registrations (5)", 3600.0, "2017301000"),
    ("203.0.113.51", "call rate limit exceeded (21 in 1m0s)", 900.0, ""),
    ("203.0.113.52", "manual", 0.0, "unknown"),
]
EXPECTED = {
    "203.0.113.50": {
        "ip": "203.0.113.50",
        "reason": "Exceeded max failed registrations (5)",
        "ttl": 3600,
        "blocker": "http://198.51.100.10:8088",
        "service": "freeswitch-security",
        "fromUser": "2017301000",
    },
    "203.0.113.51": {
        "ip": "203.0.113.51",
        "reason": "call rate limit exceeded (21 in 1m0s)",
        "ttl": 900,
        "blocker": "http://198.51.100.10:8088",
        "service": "freeswitch-security",
    },
    "203.0.113.52": {
        "ip": "203.0.113.52",
        "reason": "manual",
        "ttl": 0,
        "blocker": "http://198.51.100.10:8088",
        "service": "freeswitch-security",
    },
}


def test_500_then_hang_then_200_reports_each_ban_once(server: ChanDaemon, store: Store) -> None:
    clock = Clock(1_700_000_000.0)
    rep = Reporter(store, config(server.url), clock=clock)
    for ip, reason, ttl, user in BANS:
        assert rep.report_ban(ip, ip, reason, ttl, user)
    assert not rep.report_ban(BANS[0][0], BANS[0][0], "again", 60, "")  # pending: no dup
    assert rep.duplicates == 1 and rep.pending == 3

    server.mode = "500"
    assert rep.run_once(clock.now) == 0
    assert (rep.sent, rep.failed, rep.pending) == (0, 3, 3)
    assert all(i.attempts == 1 and i.last_error == "HTTP 500" for i in store.due(1e12, 10))
    assert rep.run_once(clock.now) == 0  # backing off: nothing due yet, nothing sent
    assert len(server.requests) == 3

    server.mode = "hang"
    clock.now += 1.0
    started = time.monotonic()
    assert rep.run_once(clock.now) == 0
    assert time.monotonic() - started < 5 * TIMEOUT  # the timeout, not the server, ended it
    assert (rep.sent, rep.failed, rep.pending) == (0, 6, 3)
    assert all(i.attempts == 2 and "Timeout" in i.last_error for i in store.due(1e12, 10))

    server.mode = "200"
    clock.now += 1.0
    assert rep.run_once(clock.now) == 0  # second backoff (2 s) not over yet
    clock.now += 1.0
    assert rep.run_once(clock.now) == 3
    assert (rep.sent, rep.failed, rep.pending) == (3, 6, 0)
    clock.now += 100
    assert rep.run_once(clock.now) == 0

    accepted = server.accepted()
    assert sorted(b["ip"] for b in accepted) == sorted(EXPECTED)  # each exactly once
    for body in accepted:
        assert body == EXPECTED[body["ip"]]
    assert len(server.requests) == 9
    assert all(ct == "application/json" for _, _, ct in server.requests)
    assert rep.stats() == {
        "reportsSent": 3,
        "reportsFailed": 6,
        "reportsPending": 0,
        "reportsDropped": 0,
    }


def test_redirect_is_a_failure_not_followed(server: ChanDaemon, store: Store) -> None:
    rep = Reporter(store, config(server.url))
    server.mode = "302"
    rep.report_ban("192.0.2.1", "192.0.2.1", "r", 60, "")
    rep.run_once(time.time())
    assert (rep.sent, rep.failed) == (0, 1)
    assert store.due(1e12, 1)[0].last_error == "HTTP 302"
    assert len(server.requests) == 1


def test_unreachable_endpoint_counts_failure(store: Store) -> None:
    rep = Reporter(store, config("http://127.0.0.1:9/report"))  # discard port: refused
    rep.report_ban("192.0.2.1", "192.0.2.1", "r", 60, "")
    assert rep.run_once(time.time()) == 0
    assert rep.failed == 1 and rep.pending == 1


def test_background_thread_delivers_and_survives_restart(
    server: ChanDaemon, tmp_path: Path
) -> None:
    path = str(tmp_path / "bg.db")
    server.mode = "500"
    with Store(path) as s:  # first life: the endpoint is down, the report stays queued
        rep = Reporter(s, config(server.url))
        rep.report_ban("192.0.2.7", "192.0.2.7", "r", 60, "alice")
        rep.run_once(time.time())
        rep.stop()
        assert s.pending_count() == 1
    server.mode = "200"
    with Store(path, backoff_base=0.01) as s:  # restart: the outbox is still there
        rep = Reporter(s, config(server.url), interval=0.05)
        rep.start()
        rep.report_ban("192.0.2.8", "192.0.2.8", "r", 0, "")
        wait_for(lambda: rep.sent >= 2, 10, 0.02)
        rep.stop()
        assert rep.sent == 2 and s.pending_count() == 0
    assert sorted(b["ip"] for b in server.accepted()) == ["192.0.2.7", "192.0.2.8"]


def test_disabled_reporter_does_nothing(store: Store) -> None:
    rep = Reporter(store, ChanDaemonConfig())  # the default: off
    assert not rep.enabled
    assert not rep.report_ban("192.0.2.1", "192.0.2.1", "r", 60, "")
    rep.start()
    assert rep.run_once(time.time()) == 0
    rep.stop()
    assert store.pending_count() == 0
    assert rep.stats()["reportsSent"] == 0


def test_outbox_full_counts_dropped(tmp_path: Path, server: ChanDaemon) -> None:
    with Store(str(tmp_path / "f.db"), outbox_max_pending=2) as s:
        rep = Reporter(s, config(server.url))
        for i in range(4):
            rep.report_ban(f"192.0.2.{i}", f"192.0.2.{i}", "r", 60, "")
        assert rep.pending == 2 and rep.dropped == 2 and rep.duplicates == 0


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "http://", "http://a b/", "example.com"]
)
def test_bad_urls_are_refused(store: Store, url: str) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        Reporter(store, config(url))


def test_safe_url_hides_credentials_and_query() -> None:
    url = "https://user:s3cret@chan.example:8443/api/report?token=abc"
    assert safe_url(url) == "https://chan.example:8443/api/report"


def test_payload_omits_unknown_user_and_uses_whole_seconds() -> None:
    cfg = ChanDaemonConfig(blocker_url="", service_name="svc")
    body = json.loads(make_payload("192.0.2.1", "r", 90.9, "unknown", cfg))
    assert body == {"ip": "192.0.2.1", "reason": "r", "ttl": 90, "blocker": "", "service": "svc"}
    assert list(json.loads(make_payload("192.0.2.1", "r", 1, "bob", cfg))) == [
        "ip",
        "reason",
        "ttl",
        "blocker",
        "service",
        "fromUser",
    ]


def test_failure_logs_never_carry_secrets(
    server: ChanDaemon, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.mode = "500"
    port = server.server_address[1]
    url = f"http://user:pw-secret@127.0.0.1:{port}/report?key=tok-secret"
    rep = Reporter(store, config(url))
    rep.start()
    rep.report_ban("192.0.2.1", "192.0.2.1", "r", 60, "sip-user-1")
    wait_for(lambda: rep.failed >= 1, 5, 0.02)
    rep.stop()
    assert rep.failed >= 1
    text = caplog.text + "".join(i.last_error for i in store.due(1e12, 10))
    assert "HTTP 500" in text
    for secret in ("pw-secret", "tok-secret", "sip-user-1"):
        assert secret not in text
    assert server.auth == ["Basic dXNlcjpwdy1zZWNyZXQ="]  # user:pw-secret, as Basic auth
