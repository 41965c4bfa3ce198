"""Metric families of issue 12 (rule modes, protected sources, ban budget, ESL
hardening), rendered from one Scrape next to fsguard_api.metrics' families.

- fsguard_simulated_decisions_total{rule,worker,pid,simulated="true"}: decisions of
  rules in simulate mode (never applied; fsguard_decisions_total counts real ones);
- fsguard_spoofing_suspected_total{rule,worker,pid}: single unauthenticated events
  against a protected source (not banned);
- fsguard_ban_budget_exceeded_total{pid}, fsguard_bans_last_minute{pid},
  fsguard_ban_budget_over{pid}: automatic bans against security.max_bans_per_minute;
- fsguard_esl_hardening_warning{check}: 1 when an ESL hardening check fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fsguard_api.metrics_scrape import num
from shared.esl_hardening import CHECKS
from shared.ops.worker import WorkerStats


def rule_families(
    workers: list[WorkerStats | None],
    firewall: dict[str, Any] | None,
    hardening: Mapping[str, str],
) -> Iterator[Metric]:
    simulated = CounterMetricFamily(
        "fsguard_simulated_decisions",
        "Decisions of rules in simulate mode (logged and recorded, never applied)",
        labels=["rule", "worker", "pid", "simulated"],
    )
    spoofing = CounterMetricFamily(
        "fsguard_spoofing_suspected",
        "Single unauthenticated events against a protected source (not banned)",
        labels=["rule", "worker", "pid"],
    )
    for index, w in enumerate(workers):
        if w is None:
            continue
        worker, pid = str(index), str(w.pid)
        for rule, count in sorted(w.simulated_by_rule.items()):
            simulated.add_metric([rule, worker, pid, "true"], float(count))
        for rule, count in sorted(w.spoofing_by_rule.items()):
            spoofing.add_metric([rule, worker, pid], float(count))
    yield simulated
    yield spoofing
    exceeded = CounterMetricFamily(
        "fsguard_ban_budget_exceeded",
        "Automatic bans beyond security.max_bans_per_minute (banning continues)",
        labels=["pid"],
    )
    last_minute = GaugeMetricFamily(
        "fsguard_bans_last_minute", "Automatic bans applied in the last minute", labels=["pid"]
    )
    over = GaugeMetricFamily(
        "fsguard_ban_budget_over",
        "1 while automatic bans in the last minute exceed security.max_bans_per_minute",
        labels=["pid"],
    )
    if firewall is not None:
        pid = str(firewall.get("pid", ""))
        exceeded.add_metric([pid], num(firewall.get("ban_budget_exceeded")))
        last_minute.add_metric([pid], num(firewall.get("bans_last_minute")))
        over.add_metric([pid], num(firewall.get("ban_budget_over")))
    yield from (exceeded, last_minute, over)
    warning = GaugeMetricFamily(
        "fsguard_esl_hardening_warning",
        "1 when an ESL hardening check fails (default password, exposed esl_host)",
        labels=["check"],
    )
    for check in CHECKS:
        warning.add_metric([check], 1.0 if check in hardening else 0.0)
    yield warning
