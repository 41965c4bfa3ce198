"""issue 12 §4: `security.rules.<rule>.mode` = ban | simulate | off."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, config_from_dict
from tests.engine_harness import ATTACKER, Harness
from tests.sofia_events import channel_create, failure, pre_register


def harness(**modes: str) -> Harness:
    config = config_from_dict({"security": {"rules": {r: {"mode": m} for r, m in modes.items()}}})
    return Harness(config)


def test_simulated_rule_records_logs_never_bans_nor_kills() -> None:
    h = harness(toll_fraud="simulate", scanner_user_agent="simulate")
    body = channel_create(
        ATTACKER, context="public", profile="external", destination="011972599999",
        authorized=None, ua="sipcli/v1.8",
    )  # fmt: skip
    out = h.feed(body)
    assert [d.source for d in out] == ["simulated", "simulated"]
    assert {d.rule for d in out} == {"toll_fraud", "scanner_user_agent"}
    assert h.kills == []
    assert h.engine.stats()["decisions"] == 0
    assert h.engine.stats()["simulated"] == 2
    recent = h.engine.simulated_snapshot()
    assert {r.rule for r in recent} == {"toll_fraud", "scanner_user_agent"}
    assert all(r.simulated is True and r.ip == ATTACKER for r in recent)
    assert h.engine.rule_stats()["simulated_by_rule"] == {"toll_fraud": 1, "scanner_user_agent": 1}
    # one simulated decision per would-be ban, not one per event
    assert h.feed(body, advance=1) == []


def test_simulated_rule_lets_the_next_rule_act() -> None:
    h = harness(scanner_user_agent="simulate")
    for _ in range(4):
        h.feed(failure(ATTACKER, ua="friendly-scanner"), advance=1)
    bans = [d for d in h.feed(failure(ATTACKER, ua="friendly-scanner"), advance=1)
            if d.source == "rule"]  # fmt: skip
    assert [d.rule for d in bans] == ["failed_auth"]


def test_off_rule_decides_nothing_and_kills_nothing() -> None:
    h = harness(toll_fraud="off")
    body = channel_create(ATTACKER, context="public", profile="external",
                          destination="011972599999", authorized=None)  # fmt: skip
    assert h.feed(body) == []
    assert h.kills == [] and h.engine.stats()["simulated"] == 0
    h2 = harness(scanner_user_agent="off")
    assert h2.feed(pre_register(ATTACKER, ua="friendly-scanner")) == []


def test_ban_mode_is_the_default_and_bare_ip_is_off() -> None:
    h = harness()
    (ban,) = h.feed(pre_register(ATTACKER, ua="friendly-scanner"))
    assert ban.source == "rule"
    assert h.config.security.rules.bare_ip.mode == "off"


def test_invalid_mode_and_unknown_rule_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"security\.rules\.toll_fraud\.mode"):
        config_from_dict({"security": {"rules": {"toll_fraud": {"mode": "maybe"}}}})
    with pytest.raises(ConfigError, match=r"did you mean security\.rules\.toll_fraud"):
        config_from_dict({"security": {"rules": {"tollfraud": {"mode": "ban"}}}})


def test_replay_reports_simulated_decisions_apart_from_bans() -> None:
    from fsguard_cli.replay import load_phases, run_replay
    from shared.config import Config
    from tests.test_engine_captures import FIXTURES

    config = Config()
    config.security.rules.scanner_user_agent.mode = "simulate"
    result = run_replay((FIXTURES / "capture_json.bin").read_bytes(), config,
                        phases=load_phases(FIXTURES / "phases_json.txt"))  # fmt: skip
    simulated = [v for v in result.verdicts if v.kind == "simulated"]
    assert {v.rule for v in simulated} == {"scanner_user_agent"}
    assert {v.phase.split("_")[0] for v in simulated} >= {"f1", "f2", "h2"}
    assert "scanner_user_agent" not in {v.rule for v in result.bans}
    assert "failed_auth" in {v.rule for v in result.bans}  # f3 (svcrack) and a
    assert len(result.as_json()["simulated"]) == len(simulated)


def test_single_event_rules_fall_through_in_order_until_one_acts() -> None:
    """untrusted_network simulated, then scanner_user_agent bans and kills (issue 17: the
    single-event rules are one ordered table in rules/instant.py)."""
    config = config_from_dict({"security": {
        "untrusted_networks": ["198.51.100.0/24"],
        "rules": {"untrusted_network": {"mode": "simulate"}},
    }})  # fmt: skip
    h = Harness(config)
    out = h.feed(channel_create(ATTACKER, ua="friendly-scanner", user="1001"))
    assert [(d.rule, d.source) for d in out] == [
        ("untrusted_network", "simulated"),
        ("scanner_user_agent", "rule"),
    ]
    assert [d.user for d in out] == ["", "1001"]  # the network rule names no user
    assert [k.reason for k in h.kills] == ["scanner"]
