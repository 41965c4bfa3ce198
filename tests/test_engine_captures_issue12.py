"""issue 12 on the real FreeSWITCH capture (SIPp + SIPVicious): the attack phases and
only them are banned; a registered phone or a gateway whose address a forger uses for
the single-event phases is not banned; simulate mode shows the same phases."""

from __future__ import annotations

import msgspec
import pytest

from fsguard_workers.engine import DetectionEngine
from shared.config import Config, RulesConfig
from shared.messages import BanDecision, KillCall
from tests.engine_harness import Clock
from tests.test_engine_captures import Replay, build_replay, run

ATTACK_PHASES = {"a", "h1", "h2", "f1", "f2", "f3"}


@pytest.fixture(scope="module")
def replay() -> Replay:
    return build_replay()


def banned_phases(replay: Replay, outputs: list[object], source: str = "rule") -> dict[str, str]:
    phase_of = {ip: phase for phase, ip in replay.address.items()}
    return {
        phase_of[o.ip]: o.rule
        for o in outputs
        if isinstance(o, BanDecision) and o.source == source
    }


def moved(replay: Replay, phases: set[str], to_phase: str) -> Replay:
    """The same capture with `phases` sent from `to_phase`'s address (a forged source)."""
    target = replay.address[to_phase].encode()
    events = []
    for phase, ts, body in replay.events:
        if phase in phases:
            body = body.replace(replay.address[phase].encode(), target)
        events.append((phase, ts, body))
    return Replay(events=events, address=dict(replay.address))


def test_exactly_the_attack_phases_are_banned(replay: Replay) -> None:
    engine, outputs = run(replay)
    bans = banned_phases(replay, outputs)
    assert set(bans) == ATTACK_PHASES
    assert "registration_rate" not in bans.values()
    assert engine.stats()["spoofing_suspected"] == 0


def test_forged_single_events_from_a_registered_phone_do_not_ban_it(replay: Replay) -> None:
    # f1 (svwar REGISTER: challenges only) and h1 (toll-fraud probe on the open profile)
    # arrive with the source address of phase c's phone, registered at that moment.
    forged = moved(replay, {"f1", "h1"}, "c")
    engine, outputs = run(forged)
    bans = banned_phases(forged, outputs)
    assert "c" not in bans
    assert engine.stats()["spoofing_suspected"] >= 2
    assert "toll-fraud" in [o.reason for o in outputs if isinstance(o, KillCall)]


def test_a_cracked_password_from_the_phones_address_still_bans(replay: Replay) -> None:
    # f3 (svcrack) completes exchanges: its evidence is real, protection or not.
    forged = moved(replay, {"f3"}, "c")
    _, outputs = run(forged)
    assert banned_phases(forged, outputs).get("c") == "scanner_user_agent"


def test_a_gateway_address_is_not_banned_for_a_toll_fraud_probe(replay: Replay) -> None:
    clock = Clock(0.0)
    engine = DetectionEngine(Config(), clock=clock, wallclock=clock)
    engine.set_gateways([replay.address["h1"]])
    outputs: list[object] = []
    for _, ts, body in replay.events:
        clock.now = ts
        engine.handle(body, ts)
        outputs.extend(engine.drain())
    bans = banned_phases(replay, outputs)
    assert "h1" not in bans and set(bans) == ATTACK_PHASES - {"h1"}
    assert "toll-fraud" in [o.reason for o in outputs if isinstance(o, KillCall)]


def test_simulate_mode_shows_the_same_phases_and_applies_nothing(replay: Replay) -> None:
    config = Config()
    for rule in msgspec.structs.fields(RulesConfig):
        if rule.name != "bare_ip":
            getattr(config.security.rules, rule.name).mode = "simulate"
    engine, outputs = run(replay, config)
    assert banned_phases(replay, outputs) == {}
    assert set(banned_phases(replay, outputs, "simulated")) == ATTACK_PHASES
    assert not [o for o in outputs if isinstance(o, KillCall)]
    assert engine.stats()["decisions"] == 0
