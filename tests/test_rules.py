"""Unit tests of each detection rule on a fake clock (the event builders are in
tests/sofia_events.py, the engine harness in tests/engine_harness.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from fsguard_workers.engine import TICK_BUDGET
from shared.config import Config
from shared.messages import BanDecision, ListChange
from tests.engine_harness import ATTACKER, OTHER, Harness, cfg
from tests.sofia_events import (
    PHONE_UAS,
    SCANNER_UAS,
    attempt,
    channel_create,
    failure,
    pre_register,
    register,
    wrong_call_state,
)

# --- rule 1: failed authentication ------------------------------------------------------------


def test_failed_auth_fires_exactly_at_threshold() -> None:
    h = Harness()
    for _ in range(4):
        assert h.feed(failure(ATTACKER), advance=1) == []
    (ban,) = h.feed(failure(ATTACKER), advance=1)
    assert ban.rule == "failed_auth"
    assert ban.reason == "Exceeded max failed registrations (5)"
    assert ban.ip == ATTACKER
    assert ban.duration == 3600
    assert ban.user == "1000"
    assert ban.user_agent == "Yealink SIP-T46S"
    assert ban.evidence_count == 5
    assert ban.event_ts == h.wall.now
    assert ban.worker == 0
    assert ban.id.startswith("w0-")
    assert ban.evidence["events"] == ["sofia::register_failure"]


def test_forbidden_attempt_and_failure_count_once() -> None:
    h = Harness()
    for _ in range(4):
        h.feed(attempt(ATTACKER, result="FORBIDDEN"), advance=1)
        assert h.feed(failure(ATTACKER), advance=0) == []
    h.feed(attempt(ATTACKER, result="FORBIDDEN"), advance=1)
    (ban,) = h.feed(failure(ATTACKER))
    assert ban.rule == "failed_auth"


def test_forbidden_attempts_alone_do_not_count_as_failures() -> None:
    h = Harness()
    for _ in range(9):
        assert h.feed(attempt(ATTACKER, result="FORBIDDEN"), advance=1) == []
    assert h.engine.failed_snapshot() == {}


@pytest.mark.parametrize(("last_at", "banned"), [(599.9, True), (600.0, False)])
def test_failed_auth_window_edge(last_at: float, banned: bool) -> None:
    h = Harness()
    h.feed(failure(ATTACKER))
    for _ in range(3):
        h.feed(failure(ATTACKER), advance=1)
    out = h.feed(failure(ATTACKER), advance=last_at - 3)
    assert bool(out) is banned


def test_failed_auth_is_a_true_sliding_window() -> None:
    """The Go counter bans 5 failures 200 s apart; a 600 s sliding window never holds 5."""
    h = Harness()
    for _ in range(50):
        assert h.feed(failure(ATTACKER), advance=200) == []
    snap = h.engine.failed_snapshot()[ATTACKER]
    assert snap.count == 3
    assert snap.userIds == ["1000"]
    assert snap.domains == ["pbx.example.net"]
    assert snap.firstAttempt.endswith("Z")


def test_unknown_user_and_wrong_password_both_count() -> None:
    h = Harness(cfg())
    h.config.security.enumeration.enabled = False
    users = ["1000", "9876", "1000", "7777", "1000"]
    out = [h.feed(failure(ATTACKER, user=u), advance=1) for u in users]
    assert [len(o) for o in out] == [0, 0, 0, 0, 1]
    assert set(out[-1][0].evidence["users"]) == {"1000", "9876", "7777"}


def test_invite_failure_is_attributed_to_the_digest_account() -> None:
    """register_failure of an INVITE names the dialled number; the account is in the
    FORBIDDEN register_attempt just before it."""
    h = Harness()
    for _ in range(5):
        h.feed(attempt(ATTACKER, user="1000"), advance=1)
        h.feed(failure(ATTACKER, user="9999", registration_type="INVITE"))
    (ban,) = h.bans
    assert ban.user == "1000"
    assert ban.evidence["registration_type"] == "INVITE"


# --- rule 2: enumeration ----------------------------------------------------------------------


def test_enumeration_bans_distinct_users_each_failing_once() -> None:
    h = Harness()
    for i in range(4):
        assert h.feed(failure(ATTACKER, user=str(2000 + i)), advance=1) == []
    (ban,) = h.feed(failure(ATTACKER, user="2004"), advance=1)
    assert ban.rule == "user_enumeration"
    assert ban.reason == "User enumeration: 5 distinct users failed in 1m0s"
    assert ban.evidence_count == 5


def test_enumeration_ignores_users_outside_its_window() -> None:
    h = Harness()
    h.config.security.max_failed_attempts = 100
    for i in range(10):
        assert h.feed(failure(ATTACKER, user=str(2000 + i)), advance=16) == []


# --- rule 3: registration flood ---------------------------------------------------------------


def test_registration_rate_counts_exchanges_and_uses_its_block_duration() -> None:
    h = Harness()
    for i in range(10):  # 5 challenged exchanges, then 5 attempts with a reused nonce
        msg = pre_register(ATTACKER) if i < 5 else attempt(ATTACKER, result="STALE")
        assert h.feed(msg, advance=1) == []
        if i < 5:  # the answer to the challenge is the same registration
            assert h.feed(attempt(ATTACKER, result="RENEWED"), advance=0.1) == []
    (ban,) = h.feed(pre_register(ATTACKER), advance=1)
    assert ban.rule == "registration_rate"
    assert ban.reason == "registration rate limit exceeded (11 in 1m0s)"
    assert ban.duration == 900


def test_registration_rate_window_slides() -> None:
    h = Harness()
    for _ in range(40):
        assert h.feed(pre_register(ATTACKER), advance=6.0) == []  # exactly 10 per 60 s


def test_learned_whitelist_bypasses_rate_limits() -> None:
    h = Harness()
    h.feed(register(ATTACKER))
    for _ in range(50):
        assert h.feed(pre_register(ATTACKER), advance=0.1) == []
    h.config.security.rate_limit.whitelist_bypass = False
    h2 = Harness(h.config)
    h2.feed(register(ATTACKER))
    # without the bypass, attempts (answers with a reused nonce: not forgeable) count
    assert any(h2.feed(attempt(ATTACKER, result="STALE"), advance=0.1) for _ in range(11))


# --- rule 4: call flood -----------------------------------------------------------------------


def test_call_rate_kills_over_limit_and_bans_once() -> None:
    h = Harness()
    for i in range(20):
        assert h.feed(channel_create(ATTACKER, uuid=f"u{i}"), advance=1) == []
    assert h.kills == []
    (ban,) = h.feed(channel_create(ATTACKER, uuid="u20"), advance=1)
    assert ban.rule == "call_rate"
    assert ban.reason == "call rate limit exceeded (21 in 1m0s)"
    assert ban.duration == 900
    assert [(k.uuid, k.reason) for k in h.kills] == [("u20", "rate-limited")]
    assert h.feed(channel_create(ATTACKER, uuid="u21"), advance=1) == []
    assert h.kills[-1].uuid == "u21"


def test_call_rate_kills_even_with_auto_block_disabled() -> None:
    h = Harness(cfg(auto_block_enabled=False))
    for i in range(25):
        assert h.feed(channel_create(ATTACKER, uuid=f"u{i}"), advance=0.5) == []
    assert [k.uuid for k in h.kills] == [f"u{i}" for i in range(20, 25)]
    assert h.engine.stats()["suppressed"] >= 1


# --- rule 5: wrong call state -----------------------------------------------------------------


def test_wrong_call_state_threshold() -> None:
    h = Harness()
    for _ in range(4):
        assert h.feed(wrong_call_state(ATTACKER), advance=10) == []
    snap = h.engine.wrong_call_state_snapshot()[ATTACKER]
    assert snap.count == 4 and snap.userIds == ["1001"]
    (ban,) = h.feed(wrong_call_state(ATTACKER), advance=10)
    assert ban.rule == "wrong_call_state"
    assert ban.reason == "Exceeded max wrong call states (5)"


# --- rule 6: untrusted domains and networks ---------------------------------------------------

UNTRUSTED = ["evil.example", "*.bad.example", "203.0.113.0/24", "1.1.1.1"]


@pytest.mark.parametrize(
    ("host", "matched"),
    [
        ("EVIL.example", "evil.example"),
        ("evil.example:5060", "evil.example"),
        ("sip.BAD.example", "sip.bad.example"),
        ("a.b.bad.example", "a.b.bad.example"),
        ("bad.example", None),
        ("notbad.example", None),
        ("evil.example.org", None),
        ("1.1.1.1", "1.1.1.1"),
    ],
)
def test_untrusted_domain_on_failure(host: str, matched: str | None) -> None:
    h = Harness(cfg(untrusted_networks=UNTRUSTED))
    out = h.feed(failure(ATTACKER, to_host=host))
    if matched is None:
        assert out == []
    else:
        (ban,) = out
        assert ban.rule == "untrusted_domain"
        assert ban.reason == f'Failed registration from untrusted domain "{matched}"'


def test_untrusted_domain_on_call_bans_and_kills() -> None:
    h = Harness(cfg(untrusted_networks=UNTRUSTED))
    (ban,) = h.feed(channel_create(ATTACKER, uuid="c1", from_host="Pbx.Bad.Example"))
    assert ban.reason == 'Call from untrusted domain "pbx.bad.example"'
    assert [(k.uuid, k.reason) for k in h.kills] == [("c1", "untrusted-domain")]


def test_untrusted_cidr_matches_the_source_address() -> None:
    h = Harness(cfg(untrusted_networks=UNTRUSTED))
    (ban,) = h.feed(pre_register("203.0.113.77"))
    assert ban.rule == "untrusted_network"
    assert "203.0.113.0/24" in ban.reason
    assert h.feed(pre_register("203.0.114.1")) == []


def test_runtime_untrusted_patterns_follow_list_changes() -> None:
    h = Harness(cfg(untrusted_networks=[]))
    assert h.feed(failure(ATTACKER, to_host="pbx.evil.example")) == []
    h.engine.on_list_change(ListChange(list="untrusted", op="add", ip="*.Evil.Example"))
    assert h.engine.untrusted_patterns() == ["*.Evil.Example"]
    (ban,) = h.feed(failure(OTHER, to_host="pbx.evil.example"))
    assert ban.rule == "untrusted_domain"
    h.engine.on_list_change(ListChange(list="untrusted", op="remove", ip="*.evil.example"))
    assert h.engine.untrusted_patterns() == []
    assert h.feed(failure("198.51.100.9", to_host="pbx.evil.example")) == []
    # Removing what is not there, or adding twice, changes nothing and is counted.
    h.engine.on_list_change(ListChange(list="untrusted", op="remove", ip="nope.example"))
    assert h.engine.stats()["list_changes_ignored"] == 1


def test_go_stats_totals_count_each_event_kind() -> None:
    h = Harness(cfg(auto_whitelist_on_success=False))
    h.feed(register("198.51.100.20"))
    h.feed(register("198.51.100.21"))
    h.feed(failure("198.51.100.22"))
    h.feed(wrong_call_state("198.51.100.23"))
    h.feed(failure("127.0.0.1"))  # trusted: never counted
    stats = h.engine.stats()
    assert (stats["registrations"], stats["failed_registrations"], stats["wrong_call_states"]) == (
        2, 1, 1,
    )


def test_trusted_wins_over_untrusted() -> None:
    h = Harness(cfg(untrusted_networks=["10.0.0.0/8", "evil.example"]))
    assert h.feed(pre_register("10.1.2.3")) == []
    assert h.feed(failure("10.1.2.3", to_host="evil.example")) == []
    assert h.engine.stats()["trusted_skipped"] == 2


# --- rule 7: scanner user agents --------------------------------------------------------------


@pytest.mark.parametrize("ua", SCANNER_UAS)
def test_scanner_banned_on_first_event(ua: str) -> None:
    h = Harness()
    (ban,) = h.feed(pre_register(ATTACKER, ua=ua))
    assert ban.rule == "scanner_user_agent"
    assert ban.user_agent == ua


@pytest.mark.parametrize("ua", PHONE_UAS)
def test_phones_are_not_scanners(ua: str) -> None:
    h = Harness()
    assert h.feed(pre_register(ATTACKER, ua=ua)) == []
    assert h.feed(attempt(ATTACKER, result="RENEWED", ua=ua)) == []
    assert h.feed(register(ATTACKER, ua=ua)) == []
    assert h.feed(channel_create(ATTACKER, ua=ua)) == []
    assert ATTACKER in h.engine.whitelist_snapshot()


@pytest.mark.parametrize(
    "make",
    [
        lambda ua: attempt(ATTACKER, ua=ua, result="RENEWED"),
        lambda ua: failure(ATTACKER, ua=ua),
        lambda ua: register(ATTACKER, ua=ua),
        lambda ua: channel_create(ATTACKER, ua=ua),
    ],
)
def test_scanner_checked_on_every_event_type(make: Callable[[str], bytes]) -> None:
    h = Harness()
    (ban,) = h.feed(make("friendly-scanner"))
    assert ban.rule == "scanner_user_agent"


def test_cracked_password_from_scanner_is_banned_not_whitelisted() -> None:
    h = Harness()
    (ban,) = h.feed(register(ATTACKER, ua="friendly-scanner"))
    assert ban.rule == "scanner_user_agent"
    assert h.engine.whitelist_snapshot() == {}


def test_scanner_call_is_killed() -> None:
    h = Harness()
    h.feed(channel_create(ATTACKER, uuid="s1", ua="sipcli/v1.8", destination="1000"))
    assert [(k.uuid, k.reason) for k in h.kills] == [("s1", "scanner")]


# --- rule 8: toll fraud -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "context", "destination", "authorized", "banned"),
    [
        ("external", "public", "011972599999999", None, True),
        ("external", "public", "0044123456", "false", True),
        ("other", "public", "+4420123456", None, True),
        ("external", "other", "00123", None, True),
        ("external", "public", "011972599999999", "true", False),
        ("internal", "default", "011972599999999", None, False),
        ("external", "public", "1000", None, False),
    ],
)
def test_toll_fraud(
    profile: str, context: str, destination: str, authorized: str | None, banned: bool
) -> None:
    h = Harness()
    out = h.feed(
        channel_create(
            ATTACKER,
            uuid="t1",
            profile=profile,
            context=context,
            destination=destination,
            authorized=authorized,
        )
    )
    assert bool(out) is banned
    if banned:
        assert out[0].rule == "toll_fraud"
        assert [(k.uuid, k.reason) for k in h.kills] == [("t1", "toll-fraud")]
    else:
        assert h.kills == []


# --- rule 9: learned whitelist ----------------------------------------------------------------


def test_office_nat_single_failing_phone_is_not_banned() -> None:
    h = Harness()
    h.feed(register(ATTACKER, user="1001"))
    for _ in range(20):
        assert h.feed(failure(ATTACKER, user="1002"), advance=1) == []


def test_attacker_behind_whitelisted_nat_trying_two_users_is_banned() -> None:
    h = Harness()
    h.feed(register(ATTACKER, user="1001"))
    for _ in range(4):
        assert h.feed(failure(ATTACKER, user="1002"), advance=1) == []
    (ban,) = h.feed(failure(ATTACKER, user="1003"), advance=1)
    assert ban.rule == "failed_auth"
    assert ATTACKER not in h.engine.whitelist_snapshot()


def test_whitelist_does_not_exempt_completed_exchanges() -> None:
    # A registered source is protected from single unauthenticated events (issue 12,
    # tests/test_rules_protection.py); evidence from completed exchanges still bans it.
    h = Harness()
    h.feed(register(ATTACKER))
    (ban,) = h.feed(attempt(ATTACKER, ua="sipvicious"))
    assert ban.rule == "scanner_user_agent"
    h = Harness()
    h.feed(register(ATTACKER))
    out = [h.feed(failure(ATTACKER, user=str(3000 + i)), advance=1) for i in range(5)]
    assert out[-1][0].rule == "user_enumeration"


def test_whitelist_ttl_rolls_and_expires() -> None:
    h = Harness(cfg(whitelist_ttl=100.0))
    h.feed(register(ATTACKER))
    h.feed(register(ATTACKER), advance=90)  # refreshed
    entry = h.engine.whitelist_snapshot()[ATTACKER]
    assert entry.userId == "1000" and entry.permanent is False
    h.advance(95)
    assert ATTACKER in h.engine.whitelist_snapshot()
    h.advance(10)
    assert h.engine.whitelist_snapshot() == {}
    assert any(h.feed(failure(ATTACKER), advance=1) for _ in range(5))


def test_manual_whitelist_exempts_like_learned() -> None:
    h = Harness()
    h.engine.on_list_change(ListChange(list="whitelist", op="add", ip=ATTACKER))
    for _ in range(30):
        assert h.feed(pre_register(ATTACKER), advance=0.1) == []
    h.engine.on_list_change(ListChange(list="whitelist", op="remove", ip=ATTACKER))
    assert any(h.feed(pre_register(ATTACKER), advance=0.1) for _ in range(11))


def test_auto_whitelist_disabled() -> None:
    h = Harness(cfg(auto_whitelist_on_success=False))
    h.feed(register(ATTACKER))
    assert h.engine.whitelist_snapshot() == {}


# --- rule 10: trusted networks ----------------------------------------------------------------


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.9.8.7", "192.168.1.20", "::ffff:172.16.0.9"])
def test_trusted_never_counted_nor_banned(ip: str) -> None:
    h = Harness()
    for i in range(30):
        h.feed(failure(ip, user=str(i)), advance=0.1)
        h.feed(pre_register(ip, ua="friendly-scanner"))
        h.feed(
            channel_create(ip, uuid=f"x{i}", context="public", destination="011", authorized=None)
        )
        h.feed(wrong_call_state(ip))
    assert h.bans == [] and h.kills == []
    assert h.engine.stats()["tracked_ips"] == 0
    assert h.engine.failed_snapshot() == {}


# --- rule 11: recidive ------------------------------------------------------------------------


def _ban_once(h: Harness, ip: str = ATTACKER) -> BanDecision:
    out: list[BanDecision] = []
    for _ in range(5):
        out += h.feed(failure(ip), advance=1)
    (ban,) = out
    return ban


def test_recidive_multiplies_and_caps() -> None:
    h = Harness()
    durations = []
    for _ in range(6):
        ban = _ban_once(h)
        durations.append(ban.duration)
        h.advance(ban.duration + 1)  # the ban expires
    assert durations == [3600, 14400, 57600, 230400, 604800, 604800]


def test_recidive_resets_after_its_window() -> None:
    h = Harness()
    first = _ban_once(h)
    h.advance(first.duration + 86400 + 10)  # the window runs from the release
    second = _ban_once(h)
    assert first.duration == second.duration == 3600


def test_recidive_without_cap_and_permanent_base() -> None:
    h = Harness()
    h.config.security.recidive.max_duration = 0
    durations = []
    for _ in range(4):
        ban = _ban_once(h)
        durations.append(ban.duration)
        h.engine.on_list_change(ListChange(list="blacklist", op="remove", ip=ATTACKER))
    assert durations == [3600, 14400, 57600, 230400]
    h2 = Harness(cfg(block_duration=0.0))
    assert _ban_once(h2).duration == 0


# --- rule 12: IPv6 ----------------------------------------------------------------------------


def test_ipv6_sources_work_with_full_addresses() -> None:
    h = Harness()
    for i in range(5):
        h.feed(failure(f"2001:db8::{i + 1}"), advance=1)
    assert h.bans == []
    assert _ban_once(h, "2001:DB8:0:0::77").ip == "2001:db8::77"


def test_ipv6_prefix_aggregation() -> None:
    h = Harness(cfg(ipv6_ban_prefix=64))
    out = []
    for i in range(5):
        out += h.feed(failure(f"2001:db8:0:1::{i + 1:x}"), advance=1)
    (ban,) = out
    assert ban.ip == "2001:db8:0:1::/64"
    assert "2001:db8:0:1::/64" not in h.engine.failed_snapshot()
    assert h.feed(pre_register("2001:db8:0:1::99", ua="sipvicious")) == []  # already banned


def test_ipv6_prefix_never_covers_a_trusted_network() -> None:
    h = Harness(cfg(ipv6_ban_prefix=48, trusted_networks=["2001:db8:0:5::/64"]))
    (ban,) = h.feed(pre_register("2001:db8:0:1::1", ua="sipvicious"))
    assert ban.ip == "2001:db8:0:1::1"
    assert h.feed(pre_register("2001:db8:0:5::1", ua="sipvicious")) == []


def test_ipv4_mapped_addresses_are_unmapped() -> None:
    h = Harness()
    (ban,) = h.feed(pre_register("::ffff:198.51.100.9", ua="sipvicious"))
    assert ban.ip == "198.51.100.9"
    assert h.feed(pre_register("198.51.100.9", ua="sipvicious")) == []


# --- rule 13: forged events -------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"Command": "sendevent CUSTOM"},
        {"Event-UUID": "0d7b6b3e-1111-2222-3333-444455556666"},
        {"Event-Calling-File": "mod_event_socket.c"},
        {"Event-Calling-Function": "parse_command"},
    ],
)
def test_forged_events_are_ignored(extra: dict[str, str]) -> None:
    h = Harness()
    for _ in range(10):
        body = json.loads(failure(ATTACKER, ua="friendly-scanner"))
        body.update(extra)
        assert h.feed(json.dumps(body).encode()) == []
    assert h.engine.stats()["forged"] == 10


def test_forged_event_with_duplicated_standard_header_is_ignored() -> None:
    h = Harness()
    genuine = failure(ATTACKER, ua="friendly-scanner")
    forged = b'{"Core-UUID":"forger",' + genuine[1:]
    assert h.feed(forged) == []
    assert h.engine.stats()["forged"] == 1
    assert len(h.feed(genuine)) == 1


# --- one decision per crossing, list changes --------------------------------------------------


def test_no_duplicate_decisions_while_banned() -> None:
    h = Harness()
    _ban_once(h)
    for _ in range(30):
        assert h.feed(failure(ATTACKER, user="x"), advance=1) == []
        assert h.feed(pre_register(ATTACKER, ua="sipvicious")) == []
    assert len(h.bans) == 1


def test_blacklist_add_means_already_banned_and_remove_clears() -> None:
    h = Harness()
    h.engine.on_list_change(
        ListChange(list="blacklist", op="add", ip=ATTACKER, expires=h.wall.now + 600)
    )
    for _ in range(10):
        assert h.feed(failure(ATTACKER), advance=1) == []
    h.engine.on_list_change(ListChange(list="blacklist", op="remove", ip=ATTACKER))
    assert h.engine.failed_snapshot() == {}
    assert _ban_once(h).rule == "failed_auth"


def test_ban_expiry_allows_a_new_decision() -> None:
    h = Harness()
    first = _ban_once(h)
    h.advance(first.duration - 10)
    assert [h.feed(failure(ATTACKER), advance=1) for _ in range(5)] == [[]] * 5
    h.advance(20)
    assert _ban_once(h).duration == 4 * first.duration


def test_decision_ids_are_unique() -> None:
    h = Harness(worker_index=3)
    for i in range(20):
        h.feed(pre_register(f"198.51.100.{i + 1}", ua="sipvicious"))
    ids = [b.id for b in h.bans]
    assert len(set(ids)) == 20 and all(i.startswith("w3-") for i in ids)
    assert {b.worker for b in h.bans} == {3}


def test_events_without_source_ip_are_ignored() -> None:
    h = Harness()
    for ip in ["", "not-an-ip", "999.1.1.1", "fe80::1%eth0"]:
        h.feed(failure(ip))
    assert h.engine.stats()["ignored"] == 4


# --- bounded state ----------------------------------------------------------------------------


def test_tracked_sources_are_capped_lru() -> None:
    config = Config()
    config.workers.max_tracked_ips = 100
    h = Harness(config)
    for i in range(1000):
        h.feed(pre_register(f"198.51.{i // 256}.{i % 256}"))
    stats = h.engine.stats()
    assert stats["tracked_ips"] == 100
    assert stats["evictions"] == 900
    assert "198.51.3.231" in h.engine.rate_snapshot("registrations")  # the newest survive


def test_tick_expires_idle_sources_incrementally() -> None:
    h = Harness()
    n = 2 * TICK_BUDGET + 100
    for i in range(n):
        h.feed(pre_register(f"198.{51 + i // 65536}.{i // 256 % 256}.{i % 256}"))
    h.advance(601)
    h.feed(pre_register(ATTACKER))
    h.engine.tick()
    assert h.engine.stats()["tracked_ips"] == n + 1 - TICK_BUDGET
    h.engine.tick()
    h.engine.tick()
    assert h.engine.stats()["tracked_ips"] == 1


def test_flood_sources_expire_after_the_registration_window_failures_after_theirs() -> None:
    """A source that only registered is forgotten once registration_window has passed;
    one with failed attempts is kept for failed_attempts_window (and still counted)."""
    h = Harness()
    sec = h.config.security
    assert sec.rate_limit.registration_window < sec.failed_attempts_window
    for i in range(500):
        h.feed(pre_register(f"198.51.{i // 256}.{i % 256}"))
    for _ in range(3):
        h.feed(failure(ATTACKER))
    h.advance(sec.rate_limit.registration_window + 1)
    for _ in range(5):
        h.engine.tick()
    assert h.engine.stats()["tracked_ips"] == 1
    assert h.engine.stats()["expired"] == 500
    assert ATTACKER in h.engine.failed_snapshot()
    h.feed(failure(ATTACKER))
    (ban,) = h.feed(failure(ATTACKER))  # the 5th failure within the window still bans
    assert ban.ip == ATTACKER
    h.advance(sec.failed_attempts_window + 1)
    for _ in range(5):
        h.engine.tick()
    assert h.engine.stats()["tracked_ips"] == 0


def test_users_per_source_are_capped() -> None:
    h = Harness()
    h.config.security.enumeration.enabled = False
    h.config.security.max_failed_attempts = 10_000
    for i in range(500):
        h.feed(failure(ATTACKER, user=f"u{i}"), advance=0.01)
    assert len(h.engine.failed_snapshot()[ATTACKER].userIds or []) == 32


def test_rate_snapshot_shape() -> None:
    h = Harness()
    h.feed(channel_create(ATTACKER, user="1001"))
    snap = h.engine.rate_snapshot("calls")[ATTACKER]
    assert snap.count == 1
    assert snap.userIds == ["1001"] and snap.domains == ["pbx.example.net"]
    assert snap.firstRequest == snap.lastRequest
    with pytest.raises(ValueError):
        h.engine.rate_snapshot("bogus")
