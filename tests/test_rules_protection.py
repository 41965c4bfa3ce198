"""issue 12 §2: one forged packet must not ban a customer. Protected sources (a held
registration with a non-scanner UA, a FreeSWITCH gateway, an operator whitelist entry)
are never banned by a single unauthenticated event; the call is still killed and the
event is counted and logged as suspected spoofing. Completed exchanges still ban."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from fsguard_workers.rules.protection import REGISTRATION_HOLD
from shared.messages import ListChange
from tests.engine_harness import ATTACKER, OTHER, Harness
from tests.sofia_events import attempt, channel_create, failure, pre_register, register, sofia

GATEWAY = "203.0.113.5"


def registered(h: Harness, ip: str = ATTACKER, expires: str = "3600") -> None:
    """A phone's successful registration (sofia::register)."""
    h.feed(sofia("register", ip, username="1000", to_user="1000", from_host="pbx.example.net",
                 user_agent="Yealink SIP-T46S", expires=expires))  # fmt: skip


def toll_probe(ip: str) -> bytes:
    return channel_create(ip, context="public", profile="external", destination="011972599999",
                          authorized=None, ua="Yealink SIP-T46S")  # fmt: skip


def untrusted_call(ip: str) -> bytes:
    return channel_create(ip, authorized=None, from_host="evil.example")


SINGLE_EVENTS = [
    ("scanner on a challenge", lambda ip: pre_register(ip, ua="friendly-scanner"), ""),
    ("toll-fraud probe on an open profile", toll_probe, "toll-fraud"),
    ("untrusted domain, unauthenticated call", untrusted_call, "untrusted-domain"),
]


@pytest.mark.parametrize(("name", "make", "kill"), SINGLE_EVENTS, ids=[s[0] for s in SINGLE_EVENTS])
def test_single_unauthenticated_event_never_bans_a_registered_source(
    name: str, make: Callable[[str], bytes], kill: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness()
    h.config.security.untrusted_networks = ["evil.example"]
    h = Harness(h.config)
    registered(h)
    with caplog.at_level(logging.WARNING):
        assert h.feed(make(ATTACKER)) == []
    assert [k.reason for k in h.kills] == ([kill] if kill else [])
    stats = h.engine.stats()
    assert stats["spoofing_suspected"] == 1
    assert sum(h.engine.rule_stats()["spoofing_by_rule"].values()) == 1
    assert "suspected spoofing" in caplog.text and ATTACKER in caplog.text
    # the same event from an unprotected source bans
    (ban,) = h.feed(make(OTHER))
    assert ban.ip == OTHER


def test_completed_exchanges_still_ban_a_registered_source() -> None:
    h = Harness()
    registered(h)
    # failed authentication by several users (answers to challenges: not forgeable)
    bans = [b for i in range(5) for b in h.feed(failure(ATTACKER, user=str(2000 + i)), advance=1)]
    assert [b.rule for b in bans] == ["user_enumeration"]
    # a registration cracked by a scanner
    h2 = Harness()
    registered(h2)
    (ban,) = h2.feed(register(ATTACKER, ua="friendly-scanner"))
    assert ban.rule == "scanner_user_agent"
    # a scanner answering a challenge (register_attempt)
    h3 = Harness()
    registered(h3)
    (ban,) = h3.feed(attempt(ATTACKER, ua="sipvicious"))
    assert ban.rule == "scanner_user_agent"


def test_protection_lasts_while_the_registration_is_held() -> None:
    h = Harness()
    h.config.security.auto_whitelist_on_success = False
    registered(h)
    h.advance(REGISTRATION_HOLD - 10)
    assert h.feed(pre_register(ATTACKER, ua="sipvicious")) == []
    registered(h)  # re-registration: held again from now
    h.advance(REGISTRATION_HOLD - 10)
    assert h.feed(pre_register(ATTACKER, ua="sipvicious")) == []
    h.advance(20)  # no news from FreeSWITCH for longer than the hold
    (ban,) = h.feed(pre_register(ATTACKER, ua="sipvicious"))
    assert ban.rule == "scanner_user_agent"


ENDINGS = {
    "expired": sofia("expire", ATTACKER, username="1000", user="1000", expires="3600"),
    "unregistered": sofia("unregister", ATTACKER, username="1000", to_user="1000", expires="0"),
}


@pytest.mark.parametrize("ending", ENDINGS.values(), ids=ENDINGS.keys())
def test_the_registration_ending_ends_protection(ending: bytes) -> None:
    h = Harness()
    registered(h)
    h.feed(ending)
    (ban,) = h.feed(pre_register(ATTACKER, ua="sipvicious"))
    assert ban.rule == "scanner_user_agent"


def test_one_phone_unregistering_leaves_the_other_protected() -> None:
    h = Harness()
    registered(h)
    h.feed(sofia("register", ATTACKER, username="1001", to_user="1001", user_agent="Zoiper"))
    h.feed(sofia("unregister", ATTACKER, username="1000", to_user="1000", expires="0"))
    assert h.feed(pre_register(ATTACKER, ua="sipvicious")) == []


def test_scanner_registration_does_not_protect() -> None:
    h = Harness()
    h.config.security.rules.scanner_user_agent.mode = "off"
    h = Harness(h.config)
    h.feed(register(ATTACKER, ua="friendly-scanner"))  # rule off: no ban, but no protection
    assert h.engine.stats()["protected_registered"] == 0


def test_gateway_is_protected_and_bypasses_the_call_rate() -> None:
    h = Harness()
    assert h.engine.set_gateways([GATEWAY, "not an address"]) == 1
    assert h.feed(pre_register(GATEWAY, ua="friendly-scanner")) == []
    assert h.feed(toll_probe(GATEWAY)) == []
    assert [k.reason for k in h.kills] == ["toll-fraud"]
    for i in range(40):  # a carrier trunk's calls
        uuid = f"91f12999-0000-0000-0000-{i:012d}"
        assert h.feed(channel_create(GATEWAY, uuid, authorized=None), advance=0.5) == []
    assert [k.reason for k in h.kills] == ["toll-fraud"]
    assert h.engine.stats()["protected_gateways"] == 1
    h.engine.set_gateways([])
    (ban,) = h.feed(pre_register(GATEWAY, ua="friendly-scanner"))
    assert ban.ip == GATEWAY


def test_operator_whitelist_entry_is_protected() -> None:
    h = Harness()
    h.engine.on_list_change(ListChange(list="whitelist", op="add", ip=ATTACKER, expires=0))
    assert h.feed(pre_register(ATTACKER, ua="friendly-scanner")) == []
    assert h.engine.stats()["spoofing_suspected"] == 1


def test_spoofing_log_line_carries_no_attacker_string(caplog: pytest.LogCaptureFixture) -> None:
    # the line names rule, event, address and why the source is protected, nothing else
    h = Harness()
    registered(h)
    body = json.loads(pre_register(ATTACKER, ua="friendly-scanner"))
    body["user-agent"] = "friendly-scanner\r\nFAKE LINE"
    with caplog.at_level(logging.WARNING):
        assert h.feed(json.dumps(body).encode()) == []
    assert "suspected spoofing: scanner_user_agent" in caplog.text
    assert "FAKE" not in caplog.text
