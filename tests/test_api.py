"""The REST API over real HTTP (uvicorn on loopback) against real ZeroMQ REP stand-ins."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import httpx
import pytest

from fsguard_api.app import version
from shared import addresses
from shared.control import ControlError
from shared.ops import firewall as fw_ops
from shared.ops import supervisor as sup_ops
from shared.ops.base import Empty
from shared.ops.firewall_bans import IptablesInfo
from shared.ops.supervisor import CommandResult, EslCommandRequest
from tests.api_peers import (
    BLACKLIST,
    ESL_STATS,
    FIREWALL_STATUS,
    IPTABLES,
    WHITELIST_TOTAL,
    ApiServer,
    Peers,
    StandIn,
    firewall_table,
    make_config,
    running,
    runtime_dir,
    supervisor_handlers,
)
from tests.go_shapes import (
    GO_BLACKLIST_ENTRY_KEYS,
    GO_ESL_KEYS,
    GO_IPTABLES_KEYS,
    GO_STATUS_KEYS,
)


class Env:
    def __init__(self, peers: Peers, server: ApiServer) -> None:
        self.peers = peers
        self.server = server
        self.client = httpx.Client(base_url=server.url, timeout=10)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with runtime_dir() as rd:
        config = make_config(rd)
        peers = Peers(config).start()
        try:
            with running(config) as server:
                e = Env(peers, server)
                yield e
                e.client.close()
        finally:
            peers.stop()


# --- happy paths, shapes field by field ------------------------------------------------


def test_health(env: Env) -> None:
    r = env.client.get("/health")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"status": "ok", "version": version()}


def test_security_status(env: Env) -> None:
    r = env.client.get("/security/status")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == GO_STATUS_KEYS | {"eslWarnings"}  # fsguard's additive field
    assert set(body.pop("eslWarnings")) == {"default_password"}  # the test config: ClueCon
    assert body == {
        "enabled": True,
        "autoBlock": True,
        "whitelistCount": WHITELIST_TOTAL,  # manual + learned, each address once
        "blacklistCount": FIREWALL_STATUS["blacklistCount"],
        "eslConnected": True,
        "eslHost": "127.0.0.1",
        "eslPort": "8021",  # a string, as in Go
    }


def test_security_esl_sums_worker_processed(env: Env) -> None:
    before = [len(w.received) for w in env.peers.workers]
    r = env.client.get("/security/esl")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == GO_ESL_KEYS
    assert body["eventsProcessed"] == 100 + 200  # two workers: 100 and 200
    for key, value in ESL_STATS.items():
        assert body[key] == value, key
    assert isinstance(body["port"], str)
    # every worker was asked exactly once
    assert [len(w.received) - b for w, b in zip(env.peers.workers, before, strict=True)] == [1, 1]


def test_security_blacklist(env: Env) -> None:
    r = env.client.get("/security/blacklist")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == set(BLACKLIST)
    for ip, entry in body.items():
        assert set(entry) == GO_BLACKLIST_ENTRY_KEYS  # the fsguard-only "rule" is dropped
        for key in GO_BLACKLIST_ENTRY_KEYS:
            assert entry[key] == BLACKLIST[ip][key]


def test_security_iptables(env: Env) -> None:
    r = env.client.get("/security/iptables")
    assert r.status_code == 200
    # The Go fields, unchanged, plus issue 15's `backend` (and the ruleset read from the
    # kernel); a firewall that does not say is the Go program's ipset backend.
    assert set(r.json()) == GO_IPTABLES_KEYS | {"backend", "ruleset"}
    assert {k: r.json()[k] for k in GO_IPTABLES_KEYS} == IPTABLES
    assert (r.json()["backend"], r.json()["ruleset"]) == ("ipset", None)


def test_esl_reconnect(env: Env) -> None:
    r = env.client.post("/security/esl/reconnect")
    assert r.status_code == 200
    assert r.json() == {"status": "success", "message": "ESL reconnection initiated"}
    assert env.peers.supervisor.ops[-1] == "reconnect"


def test_esl_command_allowed(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="fsguard.audit"):
        r = env.client.post("/security/esl/command", json={"command": "status"})
    assert r.status_code == 200
    assert r.json() == {"command": "status", "response": "UP 0 years, 0 days"}
    assert env.peers.supervisor.received[-1] == ("esl_command", {"command": "status"})
    line = caplog.records[-1].getMessage()
    assert "source=127.0.0.1" in line and "identity=anonymous" in line
    assert "command='status'" in line and "outcome=ok" in line


def test_esl_command_tab_separator_normalized(env: Env) -> None:
    r = env.client.post("/security/esl/command", json={"command": "status\targ"})
    assert r.status_code == 200
    assert env.peers.supervisor.received[-1] == ("esl_command", {"command": "status arg"})


def test_injection_never_reaches_supervisor(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    before = list(env.peers.supervisor.received)
    evil = "status \n\napi system id"
    with caplog.at_level("INFO", logger="fsguard.audit"):
        r = env.client.post("/security/esl/command", json={"command": evil})
    assert r.status_code == 500  # as Go: 403 only means "source IP not permitted"
    assert r.json()["error"].startswith("command not allowed: ")
    assert env.peers.supervisor.received == before
    line = caplog.records[-1].getMessage()
    assert repr(evil) in line and "\n" not in line and "outcome=refused" in line


@pytest.mark.parametrize("command", ["statusand_evil", "status_evil", "versions", "reloadxml"])
def test_esl_command_refused(env: Env, command: str) -> None:
    before = list(env.peers.supervisor.received)
    r = env.client.post("/security/esl/command", json={"command": command})
    assert r.status_code == 500
    assert r.json() == {"error": f"command not allowed: {command}"}
    assert env.peers.supervisor.received == before


def test_esl_command_empty_or_missing_is_400(env: Env) -> None:
    for body in ({"command": ""}, {}, {"command": 5}):
        r = env.client.post("/security/esl/command", json=body)
        assert r.status_code == 400, body
        assert set(r.json()) == {"error"}


# --- errors ---------------------------------------------------------------------------------


def test_unknown_route_404(env: Env) -> None:
    r = env.client.get("/no/such/thing")
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}


def test_bad_json_400(env: Env) -> None:
    r = env.client.post(
        "/security/esl/command",
        content=b'{"command": "status"',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert set(r.json()) == {"error"}


def test_body_over_1mib_413(env: Env) -> None:
    big = b'{"command": "' + b"a" * (1024 * 1024) + b'"}'
    r = env.client.post(
        "/security/esl/command", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert set(r.json()) == {"error"}


def test_streamed_body_over_1mib_413(env: Env) -> None:
    """No Content-Length (chunked): the cap is enforced while reading."""

    def chunks() -> Iterator[bytes]:
        yield b'{"command": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}'

    r = env.client.post(
        "/security/esl/command", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert set(r.json()) == {"error"}


def test_peer_refusal_forwarded() -> None:
    """A reply with ok=false keeps its status and error text."""

    def not_connected(req: EslCommandRequest) -> CommandResult:
        raise ControlError("not connected to FreeSWITCH ESL", 503)

    def ipset_failed(req: Empty) -> IptablesInfo:
        raise ControlError("failed to list ipset freeswitch-security", 500)

    with runtime_dir() as rd:
        config = make_config(rd)
        peers = Peers(config)
        supervisor = supervisor_handlers()
        supervisor.rebind(sup_ops.ESL_COMMAND, not_connected)
        peers.supervisor.handlers = supervisor
        table = firewall_table()
        table.rebind(fw_ops.IPTABLES, ipset_failed)
        peers.firewall.handlers = table
        peers.start()
        try:
            with running(config) as server, httpx.Client(base_url=server.url) as client:
                r = client.post("/security/esl/command", json={"command": "uptime"})
                assert r.status_code == 503
                assert r.json() == {"error": "not connected to FreeSWITCH ESL"}
                r = client.get("/security/iptables")
                assert r.status_code == 500
                assert r.json() == {"error": "failed to list ipset freeswitch-security"}
        finally:
            peers.stop()


def test_bad_peer_data_is_502() -> None:
    with runtime_dir() as rd:
        config = make_config(rd)
        peers = Peers(config)
        table = firewall_table()
        # a peer off the contract (an older or broken firewall): only "chain" of IptablesInfo
        table.rebind(fw_ops.IPTABLES, lambda req: cast(IptablesInfo, {"chain": "INPUT"}))
        peers.firewall.handlers = table
        peers.start()
        try:
            with running(config) as server, httpx.Client(base_url=server.url) as client:
                r = client.get("/security/iptables")
                assert r.status_code == 502
                assert set(r.json()) == {"error"}
        finally:
            peers.stop()


def test_dead_peers_503_quickly() -> None:
    """Nothing listens: every peer-backed route answers 503 within the timeout, never hangs."""
    calls = [
        ("GET", "/security/status"),
        ("GET", "/security/esl"),
        ("GET", "/security/blacklist"),
        ("GET", "/security/iptables"),
        ("POST", "/security/esl/reconnect"),
        ("POST", "/security/esl/command"),
    ]

    def timed(client: httpx.Client, method: str, path: str) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        r = client.request(method, path, json={"command": "status"} if method == "POST" else None)
        return r, time.monotonic() - started

    with runtime_dir() as rd, running(make_config(rd)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client, ThreadPoolExecutor(6) as ex:
            results = list(ex.map(lambda c: timed(client, *c), calls))
        for (_, path), (r, elapsed) in zip(calls, results, strict=True):
            assert r.status_code == 503, path
            assert set(r.json()) == {"error"}, path
            assert elapsed < 3.0, (path, elapsed)


def test_slow_and_dead_worker_503() -> None:
    """One worker slow (answers after 5 s), one absent: the scatter still ends in ~timeout."""
    with runtime_dir() as rd:
        config = make_config(rd)
        peers = Peers(config)
        slow = peers.workers[0]
        slow.delay = 5.0
        peers.start(skip=lambda p: p is peers.workers[1])
        try:
            with (
                running(config, peer_timeout=1.0) as server,
                httpx.Client(base_url=server.url, timeout=10) as client,
            ):
                started = time.monotonic()
                r = client.get("/security/esl")
                elapsed = time.monotonic() - started
                assert r.status_code == 503
                assert "worker" in r.json()["error"]
                assert elapsed < slow.delay - 0.5  # cut by the 1 s peer timeout, not the 5 s peer
                # the healthy peers still answer
                assert client.get("/security/blacklist").status_code == 200
        finally:
            peers.stop()


def test_security_disabled_routes_404() -> None:
    with (
        runtime_dir() as rd,
        running(make_config(rd, enabled=False)) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert client.get("/health").status_code == 200
        r = client.get("/security/status")
        assert r.status_code == 404
        assert r.json() == {"error": "not found"}


def test_stand_in_endpoint_names() -> None:
    """The stand-ins bind where shared.addresses says the real processes bind."""
    with runtime_dir() as rd:
        peers = Peers(make_config(rd))
        assert peers.supervisor.endpoint == addresses.supervisor_control(rd)
        assert peers.firewall.endpoint == addresses.firewall_control(rd)
        assert [w.endpoint for w in peers.workers] == [
            addresses.worker_control(rd, i) for i in range(2)
        ]
        assert isinstance(peers.workers[0], StandIn)


# --- the process ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_process_serves_and_exits_0_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    port = _free_port()
    cfg = {"server": {"host": "127.0.0.1", "port": port}, "paths": {"runtime_dir": str(tmp_path)}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsguard_api", "--config", str(path)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "API process did not come up"
                time.sleep(0.05)
        assert r.json()["status"] == "ok"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_warns_when_exposed_without_token(caplog: pytest.LogCaptureFixture) -> None:
    from fsguard_api.process import warn_if_exposed
    from shared.config import Config, ServerConfig

    with caplog.at_level("WARNING", logger="fsguard_api.process"):
        warn_if_exposed(Config(server=ServerConfig(host="127.0.0.1")))
        warn_if_exposed(Config(server=ServerConfig(host="::1")))
        warn_if_exposed(Config(server=ServerConfig(host="0.0.0.0", api_token="t")))
        assert caplog.records == []
        warn_if_exposed(Config(server=ServerConfig(host="0.0.0.0")))
    assert len(caplog.records) == 1
    assert "without an API token" in caplog.records[0].getMessage()


def test_manual_ban_passes_the_api_client_address_to_the_firewall(env: Env) -> None:
    """The firewall refuses a ban covering the caller (issue 11 §2): it needs its address."""
    r = env.client.post("/security/blacklist", json={"ip": "203.0.113.201"})
    assert r.status_code == 200, r.text
    bans = [args for op, args in env.peers.firewall.received if op == "ban"]
    assert bans and bans[-1]["ip"] == "203.0.113.201"
    assert bans[-1]["client"] == "127.0.0.1"
