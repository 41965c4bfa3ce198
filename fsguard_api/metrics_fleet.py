"""The CrowdSec fleet's metric families (issue 16), from the firewall's `stats` reply.

The firewall owns the outbox and applies the stream, so it holds every figure; the
connector reports its stream errors with each apply. The families are there with
crowdsec disabled too (zeros; `fsguard_crowdsec_pull_enabled` 0).
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fsguard_api.metrics_scrape import num
from shared.ops.firewall_bans import FirewallStats


def crowdsec_families(fw: FirewallStats) -> list[Metric]:
    pid = str(fw.pid)
    out: list[Metric] = []
    for name, doc, value in (
        ("fsguard_crowdsec_push_queue_depth", "Alerts/deletes waiting for the LAPI",
         fw.crowdsec_push_queue_depth),
        ("fsguard_crowdsec_remote_decisions", "LAPI decisions this node enforces",
         fw.crowdsec_remote_decisions),
    ):  # fmt: skip
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], num(value))  # None (the store did not answer): 0
        out.append(gauge)
    enabled = GaugeMetricFamily(
        "fsguard_crowdsec_pull_enabled",
        "1 when this node pulls the CrowdSec decision stream (bouncer key set)",
    )
    enabled.add_metric([], 1.0 if fw.crowdsec_pull_enabled else 0.0)
    out.append(enabled)
    sync = GaugeMetricFamily(
        "fsguard_crowdsec_last_sync_timestamp_seconds",
        "Wall time of the last decision stream applied (0 = never)",
    )
    sync.add_metric([], fw.crowdsec_last_sync)
    lag = GaugeMetricFamily(
        "fsguard_crowdsec_sync_lag_seconds",
        "Seconds since the last decision stream was applied (absent until the first)",
    )
    if fw.crowdsec_sync_lag is not None:
        lag.add_metric([], fw.crowdsec_sync_lag)
    out += [sync, lag]
    for name, doc, count in (
        ("fsguard_crowdsec_pushed", "Outbox items the LAPI accepted", fw.crowdsec_pushed),
        ("fsguard_crowdsec_push_failures", "Failed pushes to the LAPI (retried)",
         fw.crowdsec_push_failures),
        ("fsguard_crowdsec_push_dropped", "Bans not queued: outbox full",
         fw.crowdsec_push_dropped),
        ("fsguard_crowdsec_decisions_applied", "LAPI decisions that banned or extended",
         fw.crowdsec_applied),
        ("fsguard_crowdsec_decisions_removed", "Remote bans lifted (deleted on the LAPI)",
         fw.crowdsec_removed),
        ("fsguard_crowdsec_decisions_refused", "LAPI decisions on trusted/whitelisted addresses",
         fw.crowdsec_refused),
        ("fsguard_crowdsec_stream_errors", "Failed decision stream pulls",
         fw.crowdsec_stream_errors),
    ):  # fmt: skip
        counter = CounterMetricFamily(name, doc, labels=["pid"])
        counter.add_metric([pid], float(count))
        out.append(counter)
    by_origin = fw.crowdsec_active_by_origin
    if by_origin:
        gauge = GaugeMetricFamily(
            "fsguard_bans_active_by_origin", "Active bans by origin (local, crowdsec)",
            labels=["origin"],
        )  # fmt: skip
        for origin, count in sorted(by_origin.items()):
            gauge.add_metric([origin], float(count))
        out.append(gauge)
    return out
