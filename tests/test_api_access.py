"""Access control: source-IP allow-list (fail closed), bearer token, protect_reads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fsguard_api.access import (
    IP_DENIED,
    AllowList,
    bearer_token,
    is_protected,
    token_matches,
)
from tests.api_peers import Peers, make_config, running, runtime_dir

TOKEN = "s3cret-token"


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, Peers]]:
    """A server + stand-ins for the config overrides given by indirect parametrization."""
    overrides: dict[str, Any] = dict(request.param)
    with runtime_dir() as rd:
        config = make_config(rd, **overrides)
        peers = Peers(config).start()
        try:
            with running(config) as server, httpx.Client(base_url=server.url) as client:
                yield client, peers
        finally:
            peers.stop()


# --- units ---------------------------------------------------------------------------------


def test_allow_list_ips_cidrs_and_mapped_addresses() -> None:
    allow = AllowList([" 127.0.0.1 ", "10.0.0.0/8", "2001:db8::/32", "", "bogus", "1.2.3.4/99"])
    assert allow.permits("127.0.0.1")
    assert allow.permits("::ffff:127.0.0.1")  # unmapped before matching
    assert allow.permits("10.200.3.4")
    assert allow.permits("::ffff:10.1.1.1")
    assert allow.permits("2001:db8::5")
    assert not allow.permits("127.0.0.2")
    assert not allow.permits("8.8.8.8")
    assert not allow.permits("::1")
    assert not allow.permits(None)
    assert not allow.permits("not-an-ip")


@pytest.mark.parametrize("entries", [[], [""], ["bogus", "999.1.1.1"]])
def test_empty_or_invalid_allow_list_denies(entries: list[str]) -> None:
    allow = AllowList(entries)
    assert not allow.permits("127.0.0.1")
    assert not allow.permits("::1")


def test_is_protected() -> None:
    assert is_protected("POST", "/security/blacklist", False)
    assert is_protected("DELETE", "/anything", False)
    assert not is_protected("GET", "/security/failed", False)
    assert not is_protected("HEAD", "/security/esl", False)
    assert is_protected("GET", "/security/failed", True)
    assert is_protected("GET", "/security/whitelist", True)
    assert is_protected("GET", "/security/whitelist/1.2.3.4", True)
    assert is_protected("GET", "/security/esl", True)
    assert not is_protected("GET", "/security/whitelisted", True)
    assert not is_protected("GET", "/security/blacklist", True)
    assert not is_protected("OPTIONS", "/security/esl", True)
    assert not is_protected("GET", "/health", True)


def test_bearer_parsing_and_compare() -> None:
    assert bearer_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([(b"Authorization", b"bearer  abc ")]) == "abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([(b"authorization", b"Bearer")]) is None
    assert bearer_token([]) is None
    assert token_matches("abc", "abc")
    assert not token_matches("abd", "abc")
    assert not token_matches(None, "abc")
    assert not token_matches("é", "abc")


# --- over HTTP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "api", [{"chandaemon": {"allowed_api_ips": ["10.0.0.0/8"]}}], indirect=True
)
def test_source_not_allowed_403(
    api: tuple[httpx.Client, Peers], caplog: pytest.LogCaptureFixture
) -> None:
    client, peers = api
    for path in ("/security/esl/reconnect", "/security/esl/command", "/no/such/route"):
        with caplog.at_level("INFO", logger="fsguard.audit"):
            r = client.post(
                path, json={"command": "status"}, headers={"X-Forwarded-For": "10.1.2.3"}
            )
        assert r.status_code == 403, path  # X-Forwarded-For is ignored; 403 comes before 404
        assert r.json() == {"error": IP_DENIED}
        line = caplog.records[-1].getMessage()
        assert f"command='POST {path}'" in line and "outcome=denied: 403" in line
        assert "source=127.0.0.1" in line
    assert "reconnect" not in peers.supervisor.ops
    assert "esl_command" not in peers.supervisor.ops
    assert client.get("/security/blacklist").status_code == 200  # reads stay open


@pytest.mark.parametrize(
    "api",
    [{"chandaemon": {"allowed_api_ips": []}}, {"chandaemon": {"allowed_api_ips": ["x", ""]}}],
    indirect=True,
)
def test_empty_allow_list_denies(api: tuple[httpx.Client, Peers]) -> None:
    client, peers = api
    r = client.post("/security/esl/reconnect")
    assert r.status_code == 403
    assert r.json() == {"error": IP_DENIED}
    assert peers.supervisor.ops == []


@pytest.mark.parametrize("api", [{"server": {"api_token": TOKEN}}], indirect=True)
def test_token_required(api: tuple[httpx.Client, Peers], caplog: pytest.LogCaptureFixture) -> None:
    client, peers = api
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = client.post("/security/esl/reconnect", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert set(r.json()) == {"error"}
    assert peers.supervisor.ops == []
    with caplog.at_level("INFO", logger="fsguard.audit"):
        r = client.post("/security/esl/reconnect", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert peers.supervisor.ops == ["reconnect"]
    assert "identity=token" in caplog.records[-1].getMessage()
    assert client.get("/security/esl").status_code == 200  # reads open without protect_reads


@pytest.mark.parametrize(
    "api",
    [
        {
            "server": {"api_token": TOKEN, "protect_reads": True},
            "chandaemon": {"allowed_api_ips": ["127.0.0.0/8"]},
        }
    ],
    indirect=True,
)
def test_protect_reads(api: tuple[httpx.Client, Peers]) -> None:
    client, _ = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.get("/security/esl")
    assert r.status_code == 401
    assert client.get("/security/esl", headers=auth).status_code == 200
    assert client.get("/security/whitelist/1.2.3.4").status_code == 401
    assert client.get("/security/blacklist").status_code == 200  # not on the list
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    "api",
    [{"server": {"protect_reads": True}, "chandaemon": {"allowed_api_ips": ["10.0.0.0/8"]}}],
    indirect=True,
)
def test_protect_reads_applies_allow_list(api: tuple[httpx.Client, Peers]) -> None:
    client, _ = api
    r = client.get("/security/esl")
    assert r.status_code == 403
    assert client.get("/security/status").status_code == 200
