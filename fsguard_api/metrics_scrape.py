"""One scrape: every process's `stats` reply, asked concurrently, and reading numbers out.

A peer that does not answer in time is None in the Scrape (`fsguard_up{process}` 0);
the scrape itself never fails because of a peer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq.asyncio
from prometheus_client.core import HistogramMetricFamily

from fsguard_api.metrics_requests import RequestCounter
from shared import addresses
from shared.control import ControlError, PeerReplyInvalid, PeerUnavailable, acall
from shared.ops import firewall as fw_ops
from shared.ops import supervisor as sup_ops
from shared.ops import worker
from shared.ops.base import Empty, Op, RepT
from shared.ops.firewall_bans import FirewallStats, HistogramSnapshot
from shared.ops.supervisor import SupervisorStats
from shared.ops.worker import WorkerStats

SCRAPE_TIMEOUT = 1.0  # per peer; peers are asked concurrently


@dataclass
class Scrape:
    """One scrape's replies (None: the peer did not answer)."""

    supervisor: SupervisorStats | None
    firewall: FirewallStats | None
    workers: list[WorkerStats | None]
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    api_pid: int = 0
    seconds: float = 0.0
    hardening: dict[str, str] = field(default_factory=dict)  # failed ESL hardening checks


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
    rd = runtime_dir
    sup = _ask(addresses.supervisor_control(rd), sup_ops.STATS, ctx, timeout)
    per_worker = []  # one call per statement: mypy then infers each reply type
    for index in range(workers):
        one = _ask(addresses.worker_control(rd, index), worker.STATS, ctx, timeout)
        per_worker.append(one)
    fw = _ask(addresses.firewall_control(rd), fw_ops.STATS, ctx, timeout)
    supervisor, firewall, worker_replies = await asyncio.gather(
        sup, fw, asyncio.gather(*per_worker)
    )
    return Scrape(
        supervisor=supervisor,
        firewall=firewall,
        workers=list(worker_replies),
        requests=dict(requests.counts) if requests is not None else {},
        api_pid=os.getpid(),
        seconds=time.perf_counter() - started,
    )


async def _ask(
    endpoint: str, op: Op[Empty, RepT], ctx: zmq.asyncio.Context, timeout: float
) -> RepT | None:
    """A typed `stats`-like call; None when the peer is silent or answers badly."""
    try:
        return await asyncio.wait_for(
            acall(endpoint, op, Empty(), timeout=timeout, ctx=ctx), timeout + 0.25
        )
    except (PeerUnavailable, TimeoutError, ControlError, PeerReplyInvalid):
        return None


def num(value: Any) -> float:
    """A reply's counter as a float; anything that is not a number counts as 0."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def histogram_buckets(snapshot: HistogramSnapshot) -> tuple[list[tuple[str, float]], float]:
    """(buckets with +Inf, sum) of a Histogram.snapshot() reply."""
    buckets = [(repr(float(le)), float(n)) for le, n in snapshot.buckets]
    buckets.append(("+Inf", float(snapshot.count)))
    return buckets, float(snapshot.sum)


def histogram(
    name: str, doc: str, snapshot: HistogramSnapshot | None, pid: str
) -> HistogramMetricFamily | None:
    if snapshot is None:
        return None
    buckets, total = histogram_buckets(snapshot)
    family = HistogramMetricFamily(name, doc, labels=["pid"])
    family.add_metric([pid], buckets, sum_value=total)
    return family


def stage_histogram(snapshots: Mapping[str, HistogramSnapshot], pid: str) -> HistogramMetricFamily:
    """fsguard_ban_stage_seconds{stage}: where each rule ban's time went."""
    family = HistogramMetricFamily(
        "fsguard_ban_stage_seconds",
        "Per rule ban: FreeSWITCH event created -> read off ESL -> decided -> in the kernel",
        labels=["stage", "pid"],
    )
    for stage, snap in sorted(snapshots.items()):
        buckets, total = histogram_buckets(snap)
        family.add_metric([stage, pid], buckets, sum_value=total)
    return family
