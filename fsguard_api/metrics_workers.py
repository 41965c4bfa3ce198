"""Metric families from the workers' `stats` (per worker, with the counting pid)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fsguard_api.metrics_scrape import num
from shared.ops.supervisor import SupervisorStats
from shared.ops.worker import WorkerStats


def decode_outcomes(w: WorkerStats) -> dict[str, int]:
    """fsguard_worker_event_decode's outcomes: the worker's decoder counters."""
    return {
        "repaired": w.invalid_utf8,
        "salvaged": w.decode_salvaged,
        "refused": w.decode_refused,
        "failed": w.decode_errors,
    }


def worker_families(
    workers: list[WorkerStats | None], supervisor: SupervisorStats | None
) -> Iterator[Metric]:
    """Worker counters; queue depth is the supervisor's sent count minus the processed."""
    sent = supervisor.sent_per_worker if supervisor is not None else []
    events = CounterMetricFamily(
        "fsguard_events",
        "Events processed by the workers, by event name",
        labels=["event", "worker", "pid"],
    )
    decisions = CounterMetricFamily(
        "fsguard_decisions",
        "Ban decisions made by the workers, by rule",
        labels=["rule", "worker", "pid"],
    )
    evictions = CounterMetricFamily(
        "fsguard_evictions",
        "Tracked sources evicted by the per-worker LRU cap",
        labels=["worker", "pid"],
    )
    processed = CounterMetricFamily(
        "fsguard_worker_processed",
        "Events handed to the detection engine",
        labels=["worker", "pid"],
    )
    tracked = GaugeMetricFamily(
        "fsguard_tracked_ips", "Sources tracked by each worker", labels=["worker"]
    )
    decode = CounterMetricFamily(
        "fsguard_worker_event_decode",
        "Event bodies the fast decoder refused, by outcome: repaired (invalid UTF-8 and "
        "the like), salvaged (broken structure), refused (size/depth limit), failed",
        labels=["outcome", "worker", "pid"],
    )
    depth = GaugeMetricFamily(
        "fsguard_queue_depth",
        "Events sent to a worker and not yet processed",
        labels=["worker"],
    )
    for index, w in enumerate(workers):
        if w is None:
            continue
        worker, pid = str(index), str(w.pid)
        for name, count in sorted(w.events_by_name.items()):
            events.add_metric([name, worker, pid], float(count))
        for rule, count in sorted(w.decisions_by_rule.items()):
            decisions.add_metric([rule, worker, pid], float(count))
        evictions.add_metric([worker, pid], float(w.evictions))
        processed.add_metric([worker, pid], float(w.processed))
        tracked.add_metric([worker], float(w.tracked_ips))
        for outcome, count in decode_outcomes(w).items():
            decode.add_metric([outcome, worker, pid], float(count))
        if index < len(sent):
            depth.add_metric([worker], max(0.0, num(sent[index]) - float(w.processed)))
    yield from (events, decisions, evictions, processed, tracked, decode, depth)
