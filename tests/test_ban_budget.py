"""issue 12 §2: the ban budget raises an alert (counter, gauge, one log line per
episode) and never stops banning; a simulated decision never reaches the firewall's
store or kernel."""

from __future__ import annotations

import logging

import pytest

from fsguard_firewall.budget import BanBudget
from fsguard_firewall.process import Firewall, make_kernel
from shared.config import Config, SecurityConfig
from shared.messages import BanDecision
from shared.ops.base import Empty
from tests.engine_harness import Clock


def test_budget_counts_bans_past_the_limit_and_logs_once_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(100.0)
    budget = BanBudget(3, clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            budget.note()
            clock.now += 1
        assert budget.exceeded == 0 and not budget.over()
        budget.note(2)
        budget.note()
    assert budget.exceeded == 3
    assert budget.over() and budget.last_minute() == 6
    assert caplog.text.count("ban budget exceeded") == 1
    clock.now += 61
    assert not budget.over() and budget.last_minute() == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            budget.note()
    assert caplog.text.count("ban budget exceeded") == 1  # a new episode
    assert budget.exceeded == 4


def decision(i: int, source: str = "rule") -> BanDecision:
    return BanDecision(id=f"t-{source}-{i}", ip=f"203.0.113.{i}", rule="failed_auth",
                       reason="Exceeded max failed registrations (5)", duration=60,
                       source=source)  # fmt: skip


def test_firewall_keeps_banning_over_budget_and_refuses_simulated_decisions() -> None:
    config = Config(security=SecurityConfig(dry_run=True, max_bans_per_minute=2))
    fw = Firewall(config, make_kernel(config))
    fw.handle_batch([decision(i) for i in range(1, 6)])
    stats = fw.control.op_stats(Empty())
    assert stats.bans_applied == 5  # banning never silently stops
    assert stats.ban_budget_exceeded == 3
    assert stats.ban_budget_over == 1 and stats.max_bans_per_minute == 2
    fw.handle_batch([decision(9, source="simulated")])
    assert "203.0.113.9" not in fw.control.op_blacklist(Empty())
    assert fw.control.op_stats(Empty()).bans_applied == 5
