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

Modules: metrics_scrape (asking the peers), metrics_supervisor / metrics_workers /
metrics_firewall / metrics_rules (families per owner), metrics_requests (API requests).

Route labels of `fsguard_api_requests_total` are route templates (`/security/blacklist/{ip}`),
never raw paths; requests that match no route count as `route="<unmatched>"`.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from fsguard_api.metrics_firewall import firewall_families
from fsguard_api.metrics_requests import RequestCounter, RequestMetricsMiddleware
from fsguard_api.metrics_rules import rule_families
from fsguard_api.metrics_scrape import Scrape, gather
from fsguard_api.metrics_supervisor import supervisor_families
from fsguard_api.metrics_workers import worker_families
from shared.config import Config, worker_count
from shared.esl_hardening import esl_warnings

__all__ = ["FsguardCollector", "Scrape", "gather", "install", "render"]


class FsguardCollector(Collector):
    """Metric families for one Scrape (a fresh collector per scrape)."""

    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        yield from self._meta()
        yield from supervisor_families(self.scrape.supervisor)
        yield from worker_families(self.scrape.workers, self.scrape.supervisor)
        yield from firewall_families(self.scrape.firewall)
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
