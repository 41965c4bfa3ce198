"""Metric families from the firewall's `stats`: bans, kernel, ledger, reports, latency."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fsguard_api.metrics_fleet import crowdsec_families
from fsguard_api.metrics_scrape import histogram, num, stage_histogram

REPORT_RESULTS = {"reportsSent": "sent", "reportsFailed": "failed", "reportsDropped": "dropped"}


def firewall_families(firewall: Mapping[str, Any] | None) -> Iterator[Metric]:
    fw = firewall
    active = GaugeMetricFamily(
        "fsguard_bans_active", "Active bans, by address family", labels=["family"]
    )
    applied = CounterMetricFamily(
        "fsguard_bans_applied",
        "Bans written by the firewall (rules and manual)",
        labels=["pid"],
    )
    kernel_errors = CounterMetricFamily(
        "fsguard_firewall_kernel_errors", "Failed kernel (ipset) applies", labels=["pid"]
    )
    reports = CounterMetricFamily(
        "fsguard_reports", "chanDaemon ban reports, by result", labels=["result", "pid"]
    )
    ledger: list[CounterMetricFamily | GaugeMetricFamily] = [
        CounterMetricFamily("fsguard_firewall_kernel_full",
                            "Kernel applies refused because a ban set is full",
                            labels=["pid"]),
        GaugeMetricFamily("fsguard_firewall_pending_bans",
                          "Bans the kernel refused, waiting for a retry", labels=["pid"]),
        CounterMetricFamily("fsguard_firewall_drift_repaired",
                            "Kernel entries added, re-timed or removed by drift checks",
                            labels=["pid"]),
        GaugeMetricFamily("fsguard_firewall_last_drift",
                          "Differences kernel vs store found by the last drift check",
                          labels=["pid"]),
        CounterMetricFamily("fsguard_firewall_store_errors",
                            "Failed state store writes (bans kept in the kernel only)",
                            labels=["pid"]),
        GaugeMetricFamily("fsguard_firewall_store_backlog",
                          "Bans enforced in the kernel, not yet written to the store",
                          labels=["pid"]),
        GaugeMetricFamily("fsguard_firewall_store_degraded",
                          "1 while the state directory is unusable (scratch store)",
                          labels=["pid"]),
    ]  # fmt: skip
    histograms: list[Metric] = []
    if fw is not None:
        pid = str(fw.get("pid", ""))
        bans = fw.get("active_bans")
        if isinstance(bans, Mapping):
            for family, count in sorted(bans.items()):
                active.add_metric([str(family)], num(count))
        applied.add_metric([pid], num(fw.get("bans_applied")))
        kernel_errors.add_metric([pid], num(fw.get("kernel_errors")))
        for family, key in zip(ledger, ("kernel_full", "pending_bans", "drift_repaired",
                                        "last_drift", "store_errors", "store_backlog",
                                        "store_degraded"),
                               strict=True):  # fmt: skip
            family.add_metric([pid], num(fw.get(key)))
        for key, result in REPORT_RESULTS.items():
            reports.add_metric([result, pid], num(fw.get(key)))
        for name, doc, key in (
            (
                "fsguard_ban_latency_seconds",
                "Threshold event read from ESL to kernel entry written",
                "ban_latency_histogram",
            ),
            (
                "fsguard_firewall_batch_seconds",
                "Time to apply one batch of ban decisions",
                "batch_seconds_histogram",
            ),
        ):
            family = histogram(name, doc, fw.get(key), pid)
            if family is not None:
                histograms.append(family)
        stages = stage_histogram(fw.get("ban_stage_histograms"), pid)
        if stages is not None:
            histograms.append(stages)
    yield from (active, applied, kernel_errors, reports)
    yield from ledger
    yield from histograms
    if fw is not None:
        yield from crowdsec_families(fw)
