"""`GET /metrics`: every fsguard process's counters in the Prometheus text format.

Nothing is shared between processes: at scrape time the API asks the supervisor, the
firewall and every worker for their control op `stats`, concurrently (one fresh REQ per
peer, SCRAPE_TIMEOUT each), and a custom collector (`FsguardCollector`) turns the replies
into metric families for a per-scrape registry. A scrape costs each owner one control
request answered between two event batches; nothing is computed on the event path.

Restarts never make a counter go down under the same labels. The rule:

- counters owned by a child of the supervisor (workers, firewall, API) carry a `pid`
  label: the process that counted them. A restarted worker starts a new series
  (`worker="1",pid="<new>"`) while the old one disappears from the exposition; sums
  over `rate()`/`increase()` (`sum by (worker) (...)`) are unaffected;
- counters owned by the supervisor (ESL, dispatch drops, restarts) carry no pid: the
  supervisor outlives its children, and when it restarts everything restarts, which
  Prometheus handles as an ordinary counter reset;
- gauges carry no pid (they are states, not sums).

A peer that does not answer in time is left out of that scrape (`fsguard_up{process}` 0);
the scrape itself never fails because of a peer.

Route labels of `fsguard_api_requests_total` are route templates (`/security/blacklist/{ip}`),
never raw paths; requests that match no route count as `route="<unmatched>"`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq.asyncio
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fsguard_api.metrics_fleet import crowdsec_families
from fsguard_api.metrics_rules import rule_families
from shared import addresses
from shared.config import Config, worker_count
from shared.control import PeerUnavailable, arequest
from shared.esl_hardening import esl_warnings

SCRAPE_TIMEOUT = 1.0  # per peer; peers are asked concurrently
UNMATCHED = "<unmatched>"
DECODE_OUTCOMES = {
    "repaired": "invalid_utf8",
    "salvaged": "decode_salvaged",
    "refused": "decode_refused",
    "failed": "decode_errors",
}
REPORT_RESULTS = {"reportsSent": "sent", "reportsFailed": "failed", "reportsDropped": "dropped"}


# --- API-side request counting ---------------------------------------------------------


class RequestCounter:
    """fsguard_api_requests_total{route,code}: counts in this API process."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, route: str, code: int) -> None:
        key = (route, str(code))
        self.counts[key] = self.counts.get(key, 0) + 1


def route_template(scope: Scope, routes: Iterable[BaseRoute]) -> str:
    """The path template of the route that served (or would serve) this request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for candidate in routes:  # requests answered before routing (401, 403, 413)
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            candidate_path = getattr(candidate, "path", None)
            if isinstance(candidate_path, str):
                return candidate_path
    return UNMATCHED


class RequestMetricsMiddleware:
    """Outermost ASGI middleware: counts every HTTP response by route template and code."""

    def __init__(self, app: ASGIApp, *, counter: RequestCounter, routes: list[BaseRoute]) -> None:
        self.app = app
        self.counter = counter
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.counter.add(route_template(scope, self.routes), status)


# --- gathering ------------------------------------------------------------------------


@dataclass
class Scrape:
    """One scrape's replies (None: the peer did not answer)."""

    supervisor: dict[str, Any] | None
    firewall: dict[str, Any] | None
    workers: list[dict[str, Any] | None]
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    api_pid: int = 0
    seconds: float = 0.0
    hardening: dict[str, str] = field(default_factory=dict)  # failed ESL hardening checks


async def _stats(endpoint: str, ctx: zmq.asyncio.Context, timeout: float) -> dict[str, Any] | None:
    try:
        reply = await asyncio.wait_for(
            arequest(endpoint, "stats", timeout=timeout, ctx=ctx), timeout + 0.25
        )
    except (PeerUnavailable, TimeoutError):
        return None
    return reply.data if reply.ok and isinstance(reply.data, dict) else None


async def gather(
    runtime_dir: str,
    workers: int,
    *,
    requests: RequestCounter | None = None,
    timeout: float = SCRAPE_TIMEOUT,
    ctx: zmq.asyncio.Context | None = None,
) -> Scrape:
    """Ask every process for its `stats`, all at once."""
    started = time.perf_counter()
    ctx = ctx or zmq.asyncio.Context.instance()
    endpoints = [addresses.supervisor_control(runtime_dir), addresses.firewall_control(runtime_dir)]
    endpoints += [addresses.worker_control(runtime_dir, i) for i in range(workers)]
    replies = await asyncio.gather(*(_stats(e, ctx, timeout) for e in endpoints))
    return Scrape(
        supervisor=replies[0],
        firewall=replies[1],
        workers=list(replies[2:]),
        requests=dict(requests.counts) if requests is not None else {},
        api_pid=os.getpid(),
        seconds=time.perf_counter() - started,
    )


# --- the collector ------------------------------------------------------------------------


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _histogram(name: str, doc: str, snapshot: Any, pid: str) -> HistogramMetricFamily | None:
    if not isinstance(snapshot, Mapping) or not isinstance(snapshot.get("buckets"), list):
        return None
    buckets = [(repr(_num(le)), _num(n)) for le, n in snapshot["buckets"]]
    buckets.append(("+Inf", _num(snapshot.get("count"))))
    family = HistogramMetricFamily(name, doc, labels=["pid"])
    family.add_metric([pid], buckets, sum_value=_num(snapshot.get("sum")))
    return family


def _stage_histogram(snapshots: Any, pid: str) -> HistogramMetricFamily | None:
    """fsguard_ban_stage_seconds{stage}: where each rule ban's time went."""
    if not isinstance(snapshots, Mapping):
        return None
    family = HistogramMetricFamily(
        "fsguard_ban_stage_seconds",
        "Per rule ban: FreeSWITCH event created -> read off ESL -> decided -> in the kernel",
        labels=["stage", "pid"],
    )
    for stage, snap in sorted(snapshots.items()):
        if not isinstance(snap, Mapping) or not isinstance(snap.get("buckets"), list):
            continue
        buckets = [(repr(_num(le)), _num(n)) for le, n in snap["buckets"]]
        buckets.append(("+Inf", _num(snap.get("count"))))
        family.add_metric([str(stage), pid], buckets, sum_value=_num(snap.get("sum")))
    return family


class FsguardCollector(Collector):
    """Metric families for one Scrape (a fresh collector per scrape)."""

    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        yield from self._meta()
        yield from self._supervisor()
        yield from self._workers()
        yield from self._firewall()
        yield from rule_families(self.scrape.workers, self.scrape.firewall, self.scrape.hardening)
        yield from self._api()

    def _meta(self) -> Iterator[Metric]:
        s = self.scrape
        up = GaugeMetricFamily(
            "fsguard_up", "1 if the process answered this scrape", labels=["process"]
        )
        up.add_metric(["supervisor"], 1.0 if s.supervisor is not None else 0.0)
        up.add_metric(["firewall"], 1.0 if s.firewall is not None else 0.0)
        for index, w in enumerate(s.workers):
            up.add_metric([f"worker-{index}"], 1.0 if w is not None else 0.0)
        up.add_metric(["api"], 1.0)
        yield up
        yield GaugeMetricFamily(
            "fsguard_scrape_duration_seconds",
            "Time the API took to ask every process for its counters",
            value=s.seconds,
        )

    def _supervisor(self) -> Iterator[Metric]:
        sup = self.scrape.supervisor or {}
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
            families[0].add_metric([], _num(esl.get("reconnects")))
            families[1].add_metric([], _num(esl.get("connection_errors")))
            families[2].add_metric([], _num(esl.get("events_received")))
            families[3].add_metric([], _num(esl.get("malformed_frames")))
            families[4].add_metric([], _num(esl.get("unexpected_replies")))
            families[5].add_metric([], _num(sup.get("kills_dropped")))
            tasks = sup.get("tasks") if isinstance(sup.get("tasks"), Mapping) else {}
            assert isinstance(tasks, Mapping)
            failures = tasks.get("failures") if isinstance(tasks.get("failures"), Mapping) else {}
            assert isinstance(failures, Mapping)
            names = {str(t) for t in tasks.get("running") or []} | {str(t) for t in failures}
            for task in sorted(names):  # every loop has a series, 0 until it fails
                task_failures.add_metric([task], _num(failures.get(task, 0)))
            per_role: dict[str, float] = {}
            for child in sup.get("children") or []:
                if isinstance(child, Mapping):
                    role = str(child.get("role", "unknown"))
                    per_role[role] = per_role.get(role, 0.0) + _num(child.get("restarts"))
            for role, count in sorted(per_role.items()):
                restarts.add_metric([role], count)
            for index, count in enumerate(sup.get("dropped_per_worker") or []):
                dropped.add_metric([str(index)], _num(count))
        yield from families
        yield task_failures
        yield restarts
        yield dropped

    def _workers(self) -> Iterator[Metric]:
        sup = self.scrape.supervisor or {}
        sent = sup.get("sent_per_worker") or []
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
        for index, w in enumerate(self.scrape.workers):
            if w is None:
                continue
            worker, pid = str(index), str(w.get("pid", ""))
            by_name = w.get("events_by_name")
            if isinstance(by_name, Mapping):
                for name, count in sorted(by_name.items()):
                    events.add_metric([str(name), worker, pid], _num(count))
            by_rule = w.get("decisions_by_rule")
            if isinstance(by_rule, Mapping):
                for rule, count in sorted(by_rule.items()):
                    decisions.add_metric([str(rule), worker, pid], _num(count))
            evictions.add_metric([worker, pid], _num(w.get("evictions")))
            processed.add_metric([worker, pid], _num(w.get("processed")))
            tracked.add_metric([worker], _num(w.get("tracked_ips")))
            for outcome, key in DECODE_OUTCOMES.items():
                decode.add_metric([outcome, worker, pid], _num(w.get(key)))
            if index < len(sent):
                depth.add_metric([worker], max(0.0, _num(sent[index]) - _num(w.get("processed"))))
        yield from (events, decisions, evictions, processed, tracked, decode, depth)

    def _firewall(self) -> Iterator[Metric]:
        fw = self.scrape.firewall
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
                    active.add_metric([str(family)], _num(count))
            applied.add_metric([pid], _num(fw.get("bans_applied")))
            kernel_errors.add_metric([pid], _num(fw.get("kernel_errors")))
            for family, key in zip(ledger, ("kernel_full", "pending_bans", "drift_repaired",
                                            "last_drift", "store_errors", "store_backlog",
                                            "store_degraded"),
                                   strict=True):  # fmt: skip
                family.add_metric([pid], _num(fw.get(key)))
            for key, result in REPORT_RESULTS.items():
                reports.add_metric([result, pid], _num(fw.get(key)))
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
                family = _histogram(name, doc, fw.get(key), pid)
                if family is not None:
                    histograms.append(family)
            stages = _stage_histogram(fw.get("ban_stage_histograms"), pid)
            if stages is not None:
                histograms.append(stages)
        yield from (active, applied, kernel_errors, reports)
        yield from ledger
        yield from histograms
        if fw is not None:
            yield from crowdsec_families(fw)

    def _api(self) -> Iterator[Metric]:
        s = self.scrape
        family = CounterMetricFamily(
            "fsguard_api_requests",
            "HTTP requests answered by the API, by route template",
            labels=["route", "code", "pid"],
        )
        for (route, code), count in sorted(s.requests.items()):
            family.add_metric([route, code, str(s.api_pid)], float(count))
        yield family


def render(scrape: Scrape) -> bytes:
    """The text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FsguardCollector(scrape))
    return generate_latest(registry)


# --- mounting ---------------------------------------------------------------------------


def install(app: FastAPI, config: Config) -> None:
    """Add GET /metrics and the request-counting middleware (call last in create_app,
    so the middleware is the outermost one and also counts refused requests)."""
    counter = RequestCounter()
    runtime_dir, workers = config.paths.runtime_dir, worker_count(config)
    app.state.request_counter = counter
    hardening = esl_warnings(config)

    async def metrics(_: Request) -> Response:
        scrape = await gather(runtime_dir, workers, requests=counter)
        scrape.hardening = hardening
        return Response(render(scrape), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestMetricsMiddleware, counter=counter, routes=app.router.routes)
