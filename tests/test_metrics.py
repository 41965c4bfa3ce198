"""GET /metrics against the real system: `fsguard run` (supervisor, workers, firewall, API as
real processes) in a fresh network namespace, fed by the fake FreeSWITCH over TCP, scraped
over real HTTP and parsed with prometheus_client's own parser.

`FsguardSystem` / `fsguard_system` (built on tests/system_helpers.py) are also used by
tests/test_audit.py and tests/test_log_safety.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from fsguard_cli.simulator import Headers, register_failure
from shared import addresses
from shared.control import PeerUnavailable
from shared.iputil import shard_of
from shared.ops import worker
from tests.netns_helpers import requires_netns, socket_in
from tests.system_helpers import (
    RunningSystem,
    answers,
    fsguard_config,
    running_fsguard_as,
    wait_for,
)

pytestmark = [requires_netns]

ROOT = Path(__file__).resolve().parent.parent
PHONE_UA = "Yealink SIP-T46S 66.86.0.15"
WORKERS = 2
SET_NAME = "fsg-metrics"
API_PORT = 18097


def failures(ip: str, count: int, user_agent: str = PHONE_UA) -> list[Headers]:
    return [register_failure(ip, user="1000", user_agent=user_agent) for _ in range(count)]


class FsguardSystem(RunningSystem):
    """The running tree plus real HTTP to its API."""

    @property
    def log(self) -> Path:
        return self.log_path

    @property
    def port(self) -> int:
        return self.api_port

    def http(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """One real HTTP/1.1 request to the API on the namespace's loopback."""
        assert self.ns is not None
        sock = socket_in(self.ns, socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", self.port))
            payload = b"" if body is None else json.dumps(body).encode()
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                f"Content-Length: {len(payload)}\r\n"
            )
            if body is not None:
                head += "Content-Type: application/json\r\n"
            sock.sendall(head.encode() + b"\r\n" + payload)
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        finally:
            sock.close()
        raw = b"".join(chunks)
        header, _, content = raw.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in header.lower():
            content = _dechunk(content)
        return status, content

    def scrape(self) -> str:
        status, content = self.http("GET", "/metrics")
        assert status == 200, content[:500]
        return content.decode()

    def samples(self) -> list[Sample]:
        """One scrape in which every process answered (a busy machine may need a retry)."""
        found: list[Sample] = []

        def complete() -> bool:
            found[:] = [s for fam in text_string_to_metric_families(self.scrape())
                        for s in fam.samples]
            return all(s.value == 1 for s in found if s.name == "fsguard_up")

        assert wait_for(complete, 20, interval=0.2), "a process never answered the scrape"
        return found

    def api_ready(self) -> bool:
        try:
            return self.http("GET", "/health", timeout=1)[0] == 200
        except OSError:
            return False


def _dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2 :]
    return b"".join(out)


@contextmanager
def fsguard_system(
    tmp: Path,
    *,
    set_name: str,
    port: int,
    workers: int = WORKERS,
    log_format: str = "json",
) -> Iterator[FsguardSystem]:
    """A whole `fsguard run` tree in a fresh namespace; everything stopped and deleted after."""

    def config(esl_port: int) -> dict[str, Any]:
        return fsguard_config(tmp, esl_port, set_name=set_name, api_port=port, workers=workers,
                              logging={"format": log_format})  # fmt: skip

    with running_fsguard_as(FsguardSystem, tmp, config, prefix="fsgmet") as system:
        assert wait_for(system.api_ready, 20), "API never answered /health"
        yield system


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FsguardSystem]:
    with fsguard_system(tmp_path_factory.mktemp("metrics"), set_name=SET_NAME,
                        port=API_PORT) as running:
        yield running


# --- helpers on parsed samples ------------------------------------------------------------


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def names_used_in_deploy() -> set[str]:
    text = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    text += (ROOT / "deploy/grafana/fsguard-dashboard.json").read_text()
    return set(re.findall(r"\bfsguard_[a-z0-9_]+", text))


def counter_series(samples: list[Sample]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Monotonic series: counters (_total) and histogram parts (_bucket, _count, _sum)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for s in samples
        if s.name.endswith(("_total", "_bucket", "_count", "_sum"))
    }


# --- tests ----------------------------------------------------------------------------------


def test_threshold_ban_shows_in_counters_and_histogram(system: FsguardSystem) -> None:
    banned = "203.0.113.7"
    before = system.samples()
    assert total(before, "fsguard_ban_latency_seconds_count") == 0
    assert total(before, "fsguard_bans_active", family="ipv4") == 0

    system.fake.send_events(failures(banned, 6))
    assert wait_for(lambda: system.in_set(banned), 10), "no ban reached the kernel"
    # The counters are read at scrape time; the ban was applied before its stats can be.
    samples = system.samples()

    up = {s.labels["process"]: s.value for s in samples if s.name == "fsguard_up"}
    assert up == {"supervisor": 1, "firewall": 1, "worker-0": 1, "worker-1": 1, "api": 1}
    assert total(samples, "fsguard_esl_connected") == 1
    assert total(samples, "fsguard_events_total", event="sofia::register_failure") >= 6
    shard = str(shard_of(banned, WORKERS))
    assert total(samples, "fsguard_events_total", worker=shard) >= 6
    decisions = [s for s in samples if s.name == "fsguard_decisions_total" and s.value > 0]
    assert len(decisions) == 1 and decisions[0].labels["worker"] == shard
    assert decisions[0].labels["rule"] and decisions[0].value == 1
    assert total(samples, "fsguard_bans_active", family="ipv4") == 1
    assert total(samples, "fsguard_bans_applied_total") == 1

    # The histogram: one observation, cumulative buckets, +Inf == _count.
    assert total(samples, "fsguard_ban_latency_seconds_count") == 1
    buckets = sorted(
        ((float(s.labels["le"]), s.value) for s in samples
         if s.name == "fsguard_ban_latency_seconds_bucket"),
    )
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), 1)
    latency = total(samples, "fsguard_ban_latency_seconds_sum")
    assert 0 < latency < 10
    # The observation sits in the first bucket whose bound is >= the observed value.
    first = next(le for le, n in buckets if n == 1)
    assert all(n == 0 for le, n in buckets if le < first) and latency <= first
    assert total(samples, "fsguard_firewall_batch_seconds_count") >= 1
    # Where the time went, by stage: one observation each (the fake FreeSWITCH stamps
    # Event-Date-Timestamp); read->decision->kernel fits inside read->kernel+commit.
    stages = {s.labels["stage"]: s.value for s in samples
              if s.name == "fsguard_ban_stage_seconds_count"}
    assert stages == {"freeswitch_to_read": 1, "read_to_decision": 1,
                      "decision_to_kernel": 1, "freeswitch_to_kernel": 1}
    sums = {s.labels["stage"]: s.value for s in samples
            if s.name == "fsguard_ban_stage_seconds_sum"}
    assert all(v >= 0 for v in sums.values())
    assert sums["read_to_decision"] + sums["decision_to_kernel"] <= latency
    assert sums["freeswitch_to_kernel"] >= sums["decision_to_kernel"]
    assert total(before, "fsguard_events_dropped_total") == total(
        samples, "fsguard_events_dropped_total") == 0


def test_api_requests_are_counted_by_route_template(system: FsguardSystem) -> None:
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        status, _ = system.http("GET", f"/security/blacklist/{ip}")
        assert status == 200
    assert system.http("GET", "/no/such/page/192.0.2.9")[0] == 404
    samples = system.samples()
    requests = [s for s in samples if s.name == "fsguard_api_requests_total"]
    routes = {s.labels["route"] for s in requests}
    assert not any("192.0.2" in route for route in routes), routes
    assert total(samples, "fsguard_api_requests_total",
                 route="/security/blacklist/{ip}", code="200") == 3
    assert total(samples, "fsguard_api_requests_total", route="<unmatched>", code="404") == 1
    assert total(samples, "fsguard_api_requests_total", route="/health", code="200") >= 1
    assert total(samples, "fsguard_api_requests_total", route="/metrics", code="200") >= 1


def test_every_metric_of_the_alerts_and_dashboard_is_exposed(system: FsguardSystem) -> None:
    system.fake.send_events(failures("203.0.113.70", 6))  # make sure a decision exists
    assert wait_for(lambda: system.in_set("203.0.113.70"), 10)
    families = list(text_string_to_metric_families(system.scrape()))
    exposed = {s.name for fam in families for s in fam.samples}
    exposed |= {fam.name for fam in families if fam.type == "histogram" and fam.samples}
    used = names_used_in_deploy()
    assert {"fsguard_esl_connected", "fsguard_ban_latency_seconds_bucket"} <= used
    missing = sorted(used - exposed)
    assert missing == [], f"used in deploy/ but not exposed: {missing}"


def test_restarted_worker_never_decreases_a_series(system: FsguardSystem) -> None:
    index = 0
    # Below-threshold traffic owned by the victim's shard: counts grow, nobody is banned.
    ips = [f"203.0.113.{n}" for n in range(100, 250)
           if shard_of(f"203.0.113.{n}", WORKERS) == index]
    for ip in ips[:10]:
        system.fake.send_events(failures(ip, 3))
    old_pid = next(c.pid for c in system.children() if c.name == f"worker-{index}")
    assert old_pid is not None

    def processed() -> float:
        return total(system.samples(), "fsguard_events_total", worker=str(index))

    assert wait_for(lambda: processed() >= 30, 10)
    before = system.samples()

    os.kill(old_pid, signal.SIGKILL)

    def restarted() -> bool:
        try:
            entry = next(c for c in system.children() if c.name == f"worker-{index}")
            endpoint = addresses.worker_control(system.runtime_dir, index)
            return entry.pid not in (None, old_pid) and answers(endpoint, worker.PING)
        except (PeerUnavailable, AssertionError, StopIteration):
            return False

    assert wait_for(restarted, 15), "killed worker was not restarted"
    system.fake.send_events(failures(ips[10], 2))  # fewer than before the kill
    assert wait_for(lambda: total(system.samples(), "fsguard_events_total",
                                  worker=str(index)) >= 2 and _new_pid_seen(system, old_pid), 10)
    after = system.samples()

    old, new = counter_series(before), counter_series(after)
    decreased = {key: (old[key], new[key]) for key in old.keys() & new.keys()
                 if new[key] < old[key]}
    assert decreased == {}
    assert len(old.keys() & new.keys()) > 10  # the comparison is not vacuous

    assert total(before, "fsguard_events_total", worker=str(index), pid=str(old_pid)) >= 30
    new_pid = next(c.pid for c in system.children() if c.name == f"worker-{index}")
    assert total(after, "fsguard_events_total", worker=str(index), pid=str(new_pid)) == 2
    assert total(after, "fsguard_events_total", pid=str(old_pid)) == 0  # old series gone
    assert total(after, "fsguard_process_restarts_total", role="worker") >= 1


def _new_pid_seen(system: FsguardSystem, old_pid: int) -> bool:
    children = {c.name: c.pid for c in system.children()}
    return children.get("worker-0") not in (None, old_pid)


def test_bad_bytes_reach_the_rules_and_undecodable_events_are_counted(
    system: FsguardSystem,
) -> None:
    """Through the real tree: a scanner whose User-Agent holds invalid UTF-8 is banned; an
    event nested 1000 levels deep is refused before decoding and counted, no worker dies."""
    scanner = "203.0.113.90"
    good = (b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::pre_register",'
            b'"network-ip":"' + scanner.encode() + b'","to-user":"1000",'
            b'"user-agent":"friendly-scanner\xff\xfe"}')
    deep = (b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::pre_register","x":'
            + b"[" * 1000 + b"]" * 1000 + b',"network-ip":"203.0.113.91"}')
    before = system.samples()
    frames = b"".join(
        b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body
        for body in (deep, deep, good)
    )
    system.fake.send_raw(frames)
    assert wait_for(lambda: system.in_set(scanner), 10), "the scanner was not banned"
    assert wait_for(
        lambda: total(system.samples(), "fsguard_worker_event_decode_total", outcome="refused")
        - total(before, "fsguard_worker_event_decode_total", outcome="refused") == 2, 10)
    samples = system.samples()
    assert total(samples, "fsguard_worker_event_decode_total", outcome="repaired") >= 1
    assert total(samples, "fsguard_process_restarts_total") == total(
        before, "fsguard_process_restarts_total")
