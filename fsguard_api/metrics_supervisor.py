"""Metric families from the supervisor's `stats`: ESL, its loops, restarts, dropped events.

Supervisor-owned counters carry no pid: the supervisor outlives its children.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared.ops.supervisor import SupervisorStats


def supervisor_families(sup: SupervisorStats | None) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "fsguard_esl_connected",
        "1 while the supervisor is connected to FreeSWITCH ESL",
        value=1.0 if sup is not None and sup.esl.connected else 0.0,
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
    if sup is not None:
        esl = sup.esl
        families[0].add_metric([], float(esl.reconnects))
        families[1].add_metric([], float(esl.connection_errors))
        families[2].add_metric([], float(esl.events_received))
        families[3].add_metric([], float(esl.malformed_frames))
        families[4].add_metric([], float(esl.unexpected_replies))
        families[5].add_metric([], float(sup.kills_dropped))
        failures = sup.tasks.failures
        for task in sorted(set(sup.tasks.running) | set(failures)):  # 0 until it fails
            task_failures.add_metric([task], float(failures.get(task, 0)))
        per_role: dict[str, float] = {}
        for child in sup.children:
            per_role[child.role] = per_role.get(child.role, 0.0) + child.restarts
        for role, count in sorted(per_role.items()):
            restarts.add_metric([role], count)
        for index, count in enumerate(sup.dropped_per_worker):
            dropped.add_metric([str(index)], float(count))
    yield from families
    yield task_failures
    yield restarts
    yield dropped
