"""Metric families from the supervisor's `stats`: ESL, its loops, restarts, dropped events.

Supervisor-owned counters carry no pid: the supervisor outlives its children.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fsguard_api.metrics_scrape import num


def supervisor_families(supervisor: Mapping[str, Any] | None) -> Iterator[Metric]:
    sup = supervisor or {}
    esl = sup.get("esl") if isinstance(sup.get("esl"), Mapping) else {}
    assert isinstance(esl, Mapping)
    yield GaugeMetricFamily(
        "fsguard_esl_connected",
        "1 while the supervisor is connected to FreeSWITCH ESL",
        value=1.0 if esl.get("connected") else 0.0,
    )
    families = [
        CounterMetricFamily("fsguard_esl_reconnects", "ESL reconnections"),
        CounterMetricFamily("fsguard_esl_connection_errors", "Failed ESL connection attempts"),
        CounterMetricFamily(
            "fsguard_esl_events_received", "Events read from the ESL socket by the supervisor"
        ),
        CounterMetricFamily(
            "fsguard_esl_malformed_frames",
            "ESL frames that broke the framing (desync: the connection is dropped)",
        ),
        CounterMetricFamily(
            "fsguard_esl_unexpected_replies", "ESL replies that arrived with no command pending"
        ),
        CounterMetricFamily(
            "fsguard_kills_dropped", "uuid_kill requests dropped: the kill queue was full"
        ),
    ]
    task_failures = CounterMetricFamily(
        "fsguard_supervisor_task_failures",
        "Failures of the supervisor's background loops (each logged and restarted)",
        labels=["task"],
    )
    restarts = CounterMetricFamily(
        "fsguard_process_restarts",
        "Restarts of the supervisor's children, by role",
        labels=["role"],
    )
    dropped = CounterMetricFamily(
        "fsguard_events_dropped",
        "Events dropped because a worker's queue was full",
        labels=["worker"],
    )
    if sup:
        families[0].add_metric([], num(esl.get("reconnects")))
        families[1].add_metric([], num(esl.get("connection_errors")))
        families[2].add_metric([], num(esl.get("events_received")))
        families[3].add_metric([], num(esl.get("malformed_frames")))
        families[4].add_metric([], num(esl.get("unexpected_replies")))
        families[5].add_metric([], num(sup.get("kills_dropped")))
        tasks = sup.get("tasks") if isinstance(sup.get("tasks"), Mapping) else {}
        assert isinstance(tasks, Mapping)
        failures = tasks.get("failures") if isinstance(tasks.get("failures"), Mapping) else {}
        assert isinstance(failures, Mapping)
        names = {str(t) for t in tasks.get("running") or []} | {str(t) for t in failures}
        for task in sorted(names):  # every loop has a series, 0 until it fails
            task_failures.add_metric([task], num(failures.get(task, 0)))
        per_role: dict[str, float] = {}
        for child in sup.get("children") or []:
            if isinstance(child, Mapping):
                role = str(child.get("role", "unknown"))
                per_role[role] = per_role.get(role, 0.0) + num(child.get("restarts"))
        for role, count in sorted(per_role.items()):
            restarts.add_metric([role], count)
        for index, count in enumerate(sup.get("dropped_per_worker") or []):
            dropped.add_metric([str(index)], num(count))
    yield from families
    yield task_failures
    yield restarts
    yield dropped
