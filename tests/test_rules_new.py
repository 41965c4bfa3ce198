"""issue 12 §3: extension scanning (calls ending in "no such number" causes) and
requests to the bare IP (off by default)."""

from __future__ import annotations

import json
from typing import Any

from shared.config import Config
from tests.engine_harness import ATTACKER, OTHER, Harness
from tests.sofia_events import STANDARD, channel_create, failure, sofia


def hangup(ip: str, n: int, cause: str = "NO_ROUTE_DESTINATION", *, sip_ip: bool = True,
           authorized: str | None = None) -> bytes:  # fmt: skip
    body: dict[str, Any] = {
        "Event-Name": "CHANNEL_HANGUP_COMPLETE",
        **STANDARD,
        "Event-Calling-File": "switch_core_state_machine.c",
        "Event-Calling-Function": "switch_core_session_reporting_state",
        "Unique-ID": f"91f12999-0000-0000-0000-{n:012d}",
        "Hangup-Cause": cause,
        "Caller-Network-Addr": ip,
        "Caller-Destination-Number": str(1000 + n),
        "Caller-Username": "scanner",
        "Channel-Name": f"sofia/external/scanner@{ip}",
    }
    if sip_ip:
        body["variable_sip_network_ip"] = ip
    if authorized is not None:
        body["variable_sip_authorized"] = authorized
    return json.dumps(body).encode()


def test_extension_scan_bans_at_the_threshold_within_the_window() -> None:
    h = Harness()
    for i in range(9):
        cause = ("NO_ROUTE_DESTINATION", "UNALLOCATED_NUMBER", "USER_NOT_REGISTERED")[i % 3]
        assert h.feed(hangup(ATTACKER, i, cause), advance=1) == []
    (ban,) = h.feed(hangup(ATTACKER, 9), advance=1)
    assert ban.rule == "extension_scan"
    assert ban.reason == "Extension scanning: 10 calls to unknown extensions in 1m0s"
    assert ban.evidence["destinations"][:3] == ["1000", "1001", "1002"]
    assert h.kills == []  # the calls are over already


def test_extension_scan_ignores_other_causes_slow_probes_and_non_sofia_legs() -> None:
    h = Harness()
    for i in range(30):
        assert h.feed(hangup(ATTACKER, i, "NORMAL_CLEARING"), advance=0.1) == []
        # loopback / bridged legs copy Caller-Network-Addr but are not the caller's request
        assert h.feed(hangup(OTHER, i, sip_ip=False), advance=0.1) == []
    for i in range(30):
        assert h.feed(hangup(ATTACKER, 100 + i), advance=7) == []  # 9 per minute at most
    assert h.engine.stats()["extension_scan_calls"] == 30


def test_extension_scan_spares_a_protected_source_on_unauthenticated_calls() -> None:
    h = Harness()
    h.engine.set_gateways([ATTACKER])
    for i in range(20):
        assert h.feed(hangup(ATTACKER, i), advance=0.1) == []
    assert h.engine.stats()["spoofing_suspected"] >= 1
    h2 = Harness()
    h2.engine.set_gateways([ATTACKER])
    bans = [b for i in range(10) for b in h2.feed(hangup(ATTACKER, i, authorized="true"))]
    assert [b.rule for b in bans] == ["extension_scan"]  # authenticated calls are real


def bare_on(**bare: Any) -> Config:
    config = Config()
    config.security.rules.bare_ip.mode = "ban"
    for key, value in bare.items():
        setattr(config.security.bare_ip, key, value)
    return config


def challenge_to(ip: str, host: str) -> bytes:
    # sofia swaps the names: from-host holds the To / Request-URI host
    return sofia("pre_register", ip, from_user="1000", from_host=host, to_user="1000",
                 to_host=host, user_agent="Zoiper")  # fmt: skip


def test_bare_ip_is_off_by_default() -> None:
    h = Harness()
    assert h.feed(challenge_to(ATTACKER, "192.0.2.10")) == []


def test_bare_ip_bans_requests_to_an_ip_literal_when_on() -> None:
    h = Harness(bare_on())
    assert h.feed(challenge_to(OTHER, "pbx.example.net")) == []
    (ban,) = h.feed(challenge_to(ATTACKER, "192.0.2.10:5060"))
    assert ban.rule == "bare_ip"
    assert ban.reason == 'Request to the bare IP "192.0.2.10" instead of a SIP domain'
    h2 = Harness(bare_on())
    (ban,) = h2.feed(failure(ATTACKER, to_host="[2001:db8::1]"))
    assert ban.evidence["host"] == "2001:db8::1"
    h3 = Harness(bare_on())
    body = json.loads(channel_create(ATTACKER, authorized=None))
    body["variable_sip_req_host"] = "192.0.2.10"
    (ban,) = h3.feed(json.dumps(body).encode())
    assert ban.rule == "bare_ip"
    assert [k.reason for k in h3.kills] == ["bare-ip"]


def test_bare_ip_allowed_hosts_and_protected_sources() -> None:
    h = Harness(bare_on(allowed_hosts=["192.0.2.0/24"]))
    assert h.feed(challenge_to(ATTACKER, "192.0.2.10")) == []
    h2 = Harness(bare_on())
    h2.engine.set_gateways([ATTACKER])
    assert h2.feed(challenge_to(ATTACKER, "192.0.2.10")) == []
    assert h2.engine.stats()["spoofing_suspected"] == 1
