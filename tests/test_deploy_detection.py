"""issue 12's alerts (ban budget, ESL hardening) fire when they should (promtool), and
their metrics are really exported by fsguard_api.metrics."""

from __future__ import annotations

from pathlib import Path

from fsguard_api.metrics import Scrape, render
from shared.ops.firewall_bans import FirewallStats
from shared.ops.worker import WorkerStats
from tests.test_deploy import run_alert_tests

TESTS = """
  - interval: 1m
    input_series:
      - series: 'fsguard_ban_budget_exceeded_total{{instance="a",pid="7"}}'
        values: '0 0 0 0 5 5 5 5 5 5 5 5 5'
      - series: 'fsguard_esl_hardening_warning{{instance="a",check="default_password"}}'
        values: '1x90'
      - series: 'fsguard_esl_hardening_warning{{instance="b",check="default_password"}}'
        values: '0x90'
    alert_rule_test:
      - eval_time: 3m
        alertname: FsguardBanBudgetExceeded
        exp_alerts: []
      - eval_time: 5m
        alertname: FsguardBanBudgetExceeded
        exp_alerts:
          - exp_labels: {{severity: critical, instance: a}}
      - eval_time: 12m
        alertname: FsguardBanBudgetExceeded
        exp_alerts: []
      - eval_time: 30m
        alertname: FsguardEslHardening
        exp_alerts: []
      - eval_time: 75m
        alertname: FsguardEslHardening
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a}}
"""


def test_budget_and_hardening_alerts_fire(tmp_path: Path) -> None:
    run_alert_tests(tmp_path, TESTS)


def test_issue12_metrics_are_exported() -> None:
    worker = WorkerStats(
        index=0,
        pid=11,
        simulated_by_rule={"toll_fraud": 2},
        spoofing_by_rule={"scanner_user_agent": 3},
    )
    firewall = FirewallStats(pid=12, ban_budget_exceeded=4, bans_last_minute=70, ban_budget_over=1)
    scrape = Scrape(supervisor=None, firewall=firewall, workers=[worker],
                    hardening={"default_password": "x"})  # fmt: skip
    text = render(scrape).decode()
    sim = (
        'fsguard_simulated_decisions_total{pid="11",rule="toll_fraud",simulated="true",'
        'worker="0"}'
    )
    assert f"{sim} 2.0" in text
    spoof = 'fsguard_spoofing_suspected_total{pid="11",rule="scanner_user_agent",worker="0"}'
    assert f"{spoof} 3.0" in text
    assert 'fsguard_ban_budget_exceeded_total{pid="12"} 4.0' in text
    assert 'fsguard_bans_last_minute{pid="12"} 70.0' in text
    assert 'fsguard_esl_hardening_warning{check="default_password"} 1.0' in text
    assert 'fsguard_esl_hardening_warning{check="exposed_host"} 0.0' in text
