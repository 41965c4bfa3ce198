"""Metric families from the firewall's `stats`: bans, kernel, ledger, reports, latency."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fsguard_api.metrics_fleet import crowdsec_families
from fsguard_api.metrics_scrape import histogram, stage_histogram
from shared.ops.firewall_bans import FirewallStats


def firewall_families(firewall: FirewallStats | None) -> Iterator[Metric]:
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
        pid = str(fw.pid)
        active.add_metric(["ipv4"], float(fw.active_bans.ipv4))
        active.add_metric(["ipv6"], float(fw.active_bans.ipv6))
        applied.add_metric([pid], float(fw.bans_applied))
        kernel_errors.add_metric([pid], float(fw.kernel_errors))
        for family, value in zip(ledger, (fw.kernel_full, fw.pending_bans, fw.drift_repaired,
                                          fw.last_drift, fw.store_errors, fw.store_backlog,
                                          fw.store_degraded),
                                 strict=True):  # fmt: skip
            family.add_metric([pid], float(value))
        # "dropped" has always been 0: `stats` carries no reportsDropped (a follow-up)
        for result, count in (("sent", fw.reportsSent), ("failed", fw.reportsFailed),
                              ("dropped", 0)):  # fmt: skip
            reports.add_metric([result, pid], float(count))
        for name, doc, snapshot in (
            (
                "fsguard_ban_latency_seconds",
                "Threshold event read from ESL to kernel entry written",
                fw.ban_latency_histogram,
            ),
            (
                "fsguard_firewall_batch_seconds",
                "Time to apply one batch of ban decisions",
                fw.batch_seconds_histogram,
            ),
        ):
            hist = histogram(name, doc, snapshot, pid)
            if hist is not None:
                histograms.append(hist)
        histograms.append(stage_histogram(fw.ban_stage_histograms, pid))
    yield from (active, applied, kernel_errors, reports)
    yield from ledger
    yield from histograms
    if fw is not None:
        yield from crowdsec_families(fw)
