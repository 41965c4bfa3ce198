"""The LAPI client against a real CrowdSec 1.4.6 LAPI on loopback, and against a
misbehaving HTTP server (garbage, 401, hang)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsguard_fleet.lapi import LapiClient, LapiError
from shared.crowdsec import alert_for
from tests.crowdsec_lapi import Lapi, running_lapi
from tests.lapi_stubs import BadServer, http_reply

MACHINE, PASSWORD, BOUNCER_KEY = "fsguard-node-a", "node-a-password-123", "bouncer-key-0123456789"


@pytest.fixture(scope="module")
def lapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lapi]:
    with running_lapi(tmp_path_factory.mktemp("lapi")) as lapi:
        lapi.add_machine(MACHINE, PASSWORD)
        lapi.add_bouncer("fsguard-b", BOUNCER_KEY)
        yield lapi


def client(lapi: Lapi, **kw: str) -> LapiClient:
    return LapiClient(
        lapi.url,
        machine_id=kw.get("machine_id", MACHINE),
        password=kw.get("password", PASSWORD),
        api_key=kw.get("api_key", BOUNCER_KEY),
        timeout=5.0,
    )


def test_pushed_alerts_are_listed_by_plain_cscli_and_streamed(lapi: Lapi) -> None:
    now = time.time()
    c = client(lapi)
    ids = c.push_alerts(
        [
            alert_for("203.0.113.70", "failed_auth", "5 failed auth", now, now + 3600, 5),
            alert_for("2001:db8:70::/64", "scanner", "friendly-scanner", now, now + 600, 1),
            alert_for("203.0.113.71", "manual", "operator", now, None, 1),
        ]
    )
    assert len(ids) == 3
    listed = {a["source"]["value"]: a for a in lapi.decisions()}  # no -a
    assert {"203.0.113.70", "2001:db8:70::/64", "203.0.113.71"} <= set(listed)
    first = listed["203.0.113.70"]
    assert first["scenario"] == "fsguard/failed_auth"
    assert first["events_count"] == 5
    assert first["message"] == "5 failed auth"
    assert first["decisions"][0]["origin"] == "crowdsec"
    assert listed["2001:db8:70::/64"]["decisions"][0]["scope"] == "Range"

    stream = c.stream(startup=True)
    got = {d.value: d for d in stream.new}
    assert 3500 < got["203.0.113.70"].seconds <= 3600  # "59m59.9…s" parsed
    assert 500 < got["2001:db8:70::/64"].seconds <= 600
    assert got["203.0.113.71"].seconds > 86400 * 365
    assert got["203.0.113.70"].scenario == "fsguard/failed_auth"

    assert c.delete_decisions("203.0.113.70") == 1
    assert c.delete_decisions("2001:db8:70::/64") == 1
    later = c.stream(startup=False)
    gone = {d.value for d in later.deleted}
    assert {"203.0.113.70", "2001:db8:70::/64"} <= gone
    assert "203.0.113.70" not in {a["source"]["value"] for a in lapi.decisions()}


def test_cscli_decisions_and_negative_durations_in_the_stream(lapi: Lapi) -> None:
    c = client(lapi)
    c.stream(startup=True)
    lapi.cscli("decisions", "add", "-i", "192.0.2.44", "-d", "2h", "-R", "tests")
    lapi.cscli("decisions", "add", "-r", "192.0.2.128/25", "-d", "1h")
    lapi.cscli("decisions", "add", "-i", "192.0.2.45", "-t", "captcha", "-d", "1h")
    step = c.stream(startup=False)
    new = {d.value: d for d in step.new}
    assert new["192.0.2.44"].origin == "cscli"
    assert "192.0.2.128/25" in new
    assert "192.0.2.45" not in new and step.skipped >= 1  # captcha is not a ban
    lapi.cscli("decisions", "delete", "-i", "192.0.2.44")
    deleted = {d.value: d for d in c.stream(startup=False).deleted}
    assert "192.0.2.44" in deleted  # its duration was negative ("-1.2s"): parsed, not refused


def test_token_is_renewed_after_401(lapi: Lapi) -> None:
    c = client(lapi)
    c.login()
    c._token = "expired.or.revoked"  # what the LAPI sees after its token expired
    now = time.time()
    assert c.push_alerts([alert_for("203.0.113.72", "x", "r", now, now + 60, 1)])
    assert c.logins == 2
    c._token_expires = time.time() + 30  # inside the renewal margin: log in before the call
    c.delete_decisions("203.0.113.72")
    assert c.logins == 3


def test_bad_credentials_are_auth_errors_without_secrets(lapi: Lapi) -> None:
    with pytest.raises(LapiError) as err:
        client(lapi, password="wrong-password-xyz").login()
    assert err.value.kind == "auth" and "wrong-password-xyz" not in str(err.value)
    with pytest.raises(LapiError) as err:
        client(lapi, api_key="not-a-key-000").stream(startup=True)
    assert err.value.kind == "auth" and "not-a-key-000" not in str(err.value)


# --- a misbehaving LAPI --------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (http_reply("200 OK", b"<html>not json"), "garbage"),
        (http_reply("200 OK", b'{"new": "nope"}'), "garbage"),
        (http_reply("401 Unauthorized", b'{"message":"access forbidden"}'), "auth"),
        (http_reply("502 Bad Gateway", b"upstream"), "server"),
        (b"\x00\x01garbage-not-http", "unreachable"),
        (None, "timeout"),
    ],
)
def test_misbehaving_lapi_gives_clear_errors(reply: bytes | None, kind: str) -> None:
    server = BadServer(reply)
    try:
        c = LapiClient(
            f"http://127.0.0.1:{server.port}",
            machine_id="m",
            password="p",
            api_key="k",
            timeout=0.5,
        )
        with pytest.raises(LapiError) as err:
            c.stream(startup=False)
        assert err.value.kind == kind
        assert "/v1/decisions/stream" in str(err.value)
        with pytest.raises(LapiError):
            c.push_alerts([])
    finally:
        server.close()


def test_unreachable_lapi(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    c = LapiClient(f"http://127.0.0.1:{port}", api_key="k", timeout=0.5)
    with pytest.raises(LapiError) as err:
        c.stream(startup=True)
    assert err.value.kind == "unreachable" and err.value.retryable
