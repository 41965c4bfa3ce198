"""The firewall's `stats` op gathers counters from every part that binds ops."""

from __future__ import annotations

from collections.abc import Callable

from shared.ops import firewall as ops
from shared.ops.base import Empty, OpTable
from shared.ops.firewall_bans import FirewallStats


def add_counters(table: OpTable, fill: Callable[[FirewallStats], None]) -> None:
    """`stats` (bound by ControlOps) also carries the counters `fill` writes."""
    base_stats = table.bound(ops.STATS)

    def stats(req: Empty) -> FirewallStats:
        out = base_stats(req)
        fill(out)
        return out

    table.rebind(ops.STATS, stats)
