"""The CrowdSec fleet's metric families (issue 16), from the firewall's `stats` reply.

The firewall owns the outbox and applies the stream, so it holds every figure; the
connector reports its stream errors with each apply. Absent keys (crowdsec disabled)
yield no families.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def crowdsec_families(fw: Mapping[str, Any]) -> list[Metric]:
    if "crowdsec_push_queue_depth" not in fw:
        return []
    pid = str(fw.get("pid", ""))
    out: list[Metric] = []
    for name, doc, key in (
        ("fsguard_crowdsec_push_queue_depth", "Alerts/deletes waiting for the LAPI",
         "crowdsec_push_queue_depth"),
        ("fsguard_crowdsec_remote_decisions", "LAPI decisions this node enforces",
         "crowdsec_remote_decisions"),
    ):  # fmt: skip
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], _num(fw.get(key)))
        out.append(gauge)
    enabled = GaugeMetricFamily(
        "fsguard_crowdsec_pull_enabled",
        "1 when this node pulls the CrowdSec decision stream (bouncer key set)",
    )
    enabled.add_metric([], 1.0 if fw.get("crowdsec_pull_enabled") else 0.0)
    out.append(enabled)
    last = fw.get("crowdsec_last_sync") or 0
    sync = GaugeMetricFamily(
        "fsguard_crowdsec_last_sync_timestamp_seconds",
        "Wall time of the last decision stream applied (0 = never)",
    )
    sync.add_metric([], _num(last))
    lag = GaugeMetricFamily(
        "fsguard_crowdsec_sync_lag_seconds",
        "Seconds since the last decision stream was applied (absent until the first)",
    )
    if fw.get("crowdsec_sync_lag") is not None:
        lag.add_metric([], _num(fw.get("crowdsec_sync_lag")))
    out += [sync, lag]
    for name, doc, key in (
        ("fsguard_crowdsec_pushed", "Outbox items the LAPI accepted", "crowdsec_pushed"),
        ("fsguard_crowdsec_push_failures", "Failed pushes to the LAPI (retried)",
         "crowdsec_push_failures"),
        ("fsguard_crowdsec_push_dropped", "Bans not queued: outbox full",
         "crowdsec_push_dropped"),
        ("fsguard_crowdsec_decisions_applied", "LAPI decisions that banned or extended",
         "crowdsec_applied"),
        ("fsguard_crowdsec_decisions_removed", "Remote bans lifted (deleted on the LAPI)",
         "crowdsec_removed"),
        ("fsguard_crowdsec_decisions_refused", "LAPI decisions on trusted/whitelisted addresses",
         "crowdsec_refused"),
        ("fsguard_crowdsec_stream_errors", "Failed decision stream pulls",
         "crowdsec_stream_errors"),
    ):  # fmt: skip
        counter = CounterMetricFamily(name, doc, labels=["pid"])
        counter.add_metric([pid], _num(fw.get(key)))
        out.append(counter)
    by_origin = fw.get("crowdsec_active_by_origin")
    if isinstance(by_origin, Mapping):
        gauge = GaugeMetricFamily(
            "fsguard_bans_active_by_origin", "Active bans by origin (local, crowdsec)",
            labels=["origin"],
        )  # fmt: skip
        for origin, count in sorted(by_origin.items()):
            gauge.add_metric([str(origin)], _num(count))
        out.append(gauge)
    return out
