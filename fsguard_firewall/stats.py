"""Counters and histograms of the firewall process (exported by `stats`, read by /metrics)."""

from __future__ import annotations

import bisect
import math
from collections import deque

from shared.ops.firewall_bans import HistogramSnapshot

LATENCY_SAMPLES = 10_000
# Prometheus histogram buckets (seconds) of fsguard_ban_latency_seconds (threshold event
# read from ESL -> kernel entry written) and fsguard_firewall_batch_seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BAN_STAGES = ("freeswitch_to_read", "read_to_decision", "decision_to_kernel",
              "freeswitch_to_kernel")
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Fixed-bucket counts (O(log b) per observation), exported cumulatively."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above the largest bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> HistogramSnapshot:
        """{"buckets": [[le, cumulative count], ...], "sum", "count"} (+Inf is "count")."""
        cumulative: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            cumulative.append((bound, total))
        return HistogramSnapshot(buckets=cumulative, sum=self.sum, count=total + self.counts[-1])


class Stats:
    def __init__(self) -> None:
        self.decisions_received = 0
        self.bans_applied = 0
        self.duplicates = 0
        self.refused_trusted = 0
        self.refused_protected = 0  # never-ban addresses (loopback, own host, ESL peer ...)
        self.invalid = 0
        self.decode_errors = 0
        self.batches = 0
        self.last_batch_seconds = 0.0
        self.kernel_errors = 0  # failed kernel transactions
        self.kernel_full = 0  # ... of which the kernel refused because a set is full
        self.retries = 0  # refused bans re-applied (successfully or not)
        self.expired_pending = 0  # refused bans that expired before the kernel took them
        self.recidive_escalations = 0
        self.bad_rows = 0  # stored bans skipped by the ban list (cannot be shown)
        self.drift_checks = 0
        self.drift_repaired = 0  # kernel entries added, re-timed or removed by drift checks
        self.last_drift = 0  # differences found by the last drift check
        self.store_errors = 0  # failed store writes (bans kept in the backlog)
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.ban_latency = Histogram(LATENCY_BUCKETS)
        # where each rule ban's time went (an operator sees whether FreeSWITCH or fsguard
        # is slow): FreeSWITCH created the event -> ESL read -> decision -> kernel
        self.ban_stages = {stage: Histogram(LATENCY_BUCKETS) for stage in BAN_STAGES}
        self.batch_seconds = Histogram(BATCH_BUCKETS)

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        data = sorted(self.latencies)
        return data[min(len(data) - 1, math.ceil(q * len(data)) - 1)]
