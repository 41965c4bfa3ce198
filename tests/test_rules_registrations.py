"""issue 12 §1: `registration_limit` counts registrations (one REGISTER exchange is one,
success or failure), as the Go program's key means; unanswered challenges still count."""

from __future__ import annotations

from shared.config import Config
from shared.messages import BanDecision
from tests.engine_harness import ATTACKER, Harness
from tests.sofia_events import attempt, failure, pre_register, register


def reg_count(h: Harness) -> int:
    entry = h.engine.rate_snapshot("registrations").get(ATTACKER)
    return entry.count if entry is not None else 0


def failed_exchange(h: Harness, advance: float = 1.0) -> list[BanDecision]:
    out: list[BanDecision] = []
    out += h.feed(pre_register(ATTACKER), advance=advance)
    out += h.feed(attempt(ATTACKER, result="FORBIDDEN"), advance=0.01)
    out += h.feed(failure(ATTACKER), advance=0.01)
    return out


def good_exchange(h: Harness, advance: float = 1.0) -> list[BanDecision]:
    out: list[BanDecision] = []
    out += h.feed(pre_register(ATTACKER), advance=advance)
    out += h.feed(attempt(ATTACKER, result="RENEWED"), advance=0.01)
    return out


def no_learning() -> Config:
    config = Config()
    config.security.auto_whitelist_on_success = False
    return config


def test_one_exchange_counts_once_success_or_failure() -> None:
    h = Harness(no_learning())
    failed_exchange(h)
    assert reg_count(h) == 1
    good_exchange(h)
    assert reg_count(h) == 2


def test_ten_exchanges_a_minute_pass_the_eleventh_bans_with_the_go_reason() -> None:
    config = no_learning()
    config.security.max_failed_attempts = 1000
    config.security.enumeration.enabled = False
    h = Harness(config)
    for _ in range(10):
        assert good_exchange(h, advance=5) == []
    (ban,) = good_exchange(h, advance=5)
    assert ban.rule == "registration_rate"
    assert ban.reason == "registration rate limit exceeded (11 in 1m0s)"


def test_phone_failing_eight_times_is_not_banned_by_the_registration_rate() -> None:
    # The example: 8 failures at one per second with a 2 s failed_attempts_window.
    config = no_learning()
    config.security.failed_attempts_window = 2.0
    h = Harness(config)
    outs = [failed_exchange(h, advance=1.0) for _ in range(8)]
    assert all(out == [] for out in outs)
    assert reg_count(h) == 8


def test_unanswered_challenge_flood_counts_one_per_challenged_request() -> None:
    h = Harness(no_learning())
    for _ in range(10):
        assert h.feed(pre_register(ATTACKER), advance=0.1) == []
    (ban,) = h.feed(pre_register(ATTACKER), advance=0.1)
    assert ban.rule == "registration_rate"
    assert ban.evidence_count == 11


def test_attempts_without_a_challenge_count_and_old_challenges_are_forgotten() -> None:
    h = Harness(no_learning())
    h.feed(pre_register(ATTACKER))  # never answered
    h.advance(120)  # the window is empty: the stale challenge answers nothing
    for _ in range(3):
        h.feed(attempt(ATTACKER, result="STALE"), advance=1)  # reused nonce, no challenge
    assert reg_count(h) == 3


def test_successful_register_event_itself_does_not_count() -> None:
    h = Harness(no_learning())
    good_exchange(h)
    h.feed(register(ATTACKER), advance=0.01)
    assert reg_count(h) == 1


def test_fast_guessing_is_banned_by_failed_auth_not_registration_rate() -> None:
    # SIPp at hundreds of guesses a second: the first rule to fire is failed_auth.
    h = Harness(no_learning())
    bans = [b for _ in range(20) for b in failed_exchange(h, advance=0.002)]
    assert [b.rule for b in bans] == ["failed_auth"]
