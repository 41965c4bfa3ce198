"""The ban ledger's data and bookkeeping: what a ban intent is, its kernel timeout, and
the ledger's state with its lookups, decision ids and acknowledgements.

fsguard_firewall.ledger.BanLedger builds on LedgerState and does the work (kernel, store,
backlog, retries); the rules it keeps are described there.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.messages import BanDecision, DecisionAck

from .backend import MAX_TIMEOUT, Element, KernelBackend
from .entries import BanEntry, BanStore, live
from .stats import Stats

log = logging.getLogger("fsguard.firewall")

SEEN_IDS_MAX = 100_000
PENDING_MAX = 100_000
RETRY_BASE = 1.0  # seconds before the first re-apply of a refused ban
RETRY_CAP = 60.0
LOUD_EVERY = 60.0  # seconds between ERROR lines about a full set / a failing store

Ack = Callable[[int, DecisionAck], None]


def kernel_timeout_for(duration: float) -> int:
    """The kernel timeout of a ban lasting `duration` seconds (0 = permanent)."""
    return 0 if duration == 0 else min(MAX_TIMEOUT, max(1, math.ceil(duration)))


@dataclass
class Intent:
    """One ban to make: the kernel element, its timeout and the entry to record."""

    elem: Element
    timeout: int  # kernel timeout, seconds (0 = permanent)
    entry: BanEntry
    decisions: list[BanDecision] = field(default_factory=list)  # waiting for its outcome
    attempts: int = 0  # kernel refusals so far

    @property
    def key(self) -> str:
        return self.entry.ip


@dataclass
class PendingBan:
    """A ban the kernel refused, waiting for its next attempt."""

    intent: Intent
    next_at: float
    error: str


class LedgerState:
    """The ledger's state, lookups, decision ids and acknowledgements."""

    def __init__(
        self,
        store: BanStore,
        kernel: KernelBackend,
        *,
        kernel_enabled: bool,
        stats: Stats | None = None,
        ack: Ack | None = None,
        processed: Callable[[list[str]], set[str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.kernel = kernel
        self.kernel_ts = 0.0  # wall time the last batch reached the kernel (stage metrics)
        self.kernel_enabled = kernel_enabled
        self.stats = stats if stats is not None else Stats()
        self.ack: Ack = ack if ack is not None else (lambda worker, a: None)
        self.processed = processed if processed is not None else (lambda ids: set())
        self.clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.pending: dict[str, PendingBan] = {}  # key -> refused ban being retried
        self._pending_ids: dict[str, str] = {}  # decision id -> key
        self.backlog: dict[str, BanEntry | None] = {}  # key -> entry (None: removed)
        self._backlog_acks: list[BanDecision] = []
        self._backlog_ids: set[str] = set()  # ids in _backlog_acks (re-sends stay unacked)
        self._loud_at: dict[str, float] = {}
        self.store_duplicates = 0  # re-sent decisions the store had processed (restart)

    # --- lookups ---------------------------------------------------------------------

    def get(self, key: str, now: float) -> BanEntry | None:
        """The active ban of `key` as the kernel holds it (backlog first, then store)."""
        if key in self.backlog:
            return live(self.backlog[key], now)
        return self.store.get(key, now)

    def active(self, now: float) -> list[BanEntry]:
        if not self.backlog:
            return self.store.active(now)
        out = {e.ip: e for e in self.store.active(now)}
        for key, entry in self.backlog.items():
            if entry is None or not entry.active(now):
                out.pop(key, None)
            else:
                out[key] = entry
        return list(out.values())

    def is_pending(self, key: str) -> bool:
        return key in self.pending

    # --- decision ids ------------------------------------------------------------------

    def remember(self, decision_id: str) -> None:
        self._seen[decision_id] = None
        if len(self._seen) > SEEN_IDS_MAX:
            self._seen.popitem(last=False)

    def triage(self, decisions: list[BanDecision]) -> list[BanDecision]:
        """Answer decisions already handled (in memory, pending, or processed by the store
        before a restart) and return the new ones, their ids now remembered."""
        fresh: list[BanDecision] = []
        unknown = [d.id for d in decisions if d.id and d.id not in self._seen]
        stored = self.processed(unknown) if unknown else set()
        for d in decisions:
            if not d.id:
                fresh.append(d)
                continue
            if d.id in self._pending_ids:
                self.stats.decisions_received += 1
                self.stats.duplicates += 1
                self.nack(d, "pending: the kernel refused it, retrying")
            elif d.id in self._seen or d.id in stored:
                self.stats.decisions_received += 1
                self.stats.duplicates += 1
                self.store_duplicates += d.id not in self._seen
                self.remember(d.id)
                if not self._in_backlog(d.id):
                    self.ack_ok(d)
            else:
                self.remember(d.id)
                fresh.append(d)
        return fresh

    def _in_backlog(self, decision_id: str) -> bool:
        return decision_id in self._backlog_ids

    def ack_ok(self, d: BanDecision) -> None:
        if d.id and d.worker >= 0:
            self.ack(d.worker, DecisionAck(id=d.id, ok=True))

    def ack_covered(self, d: BanDecision, key: str) -> None:
        """A decision an existing ban covers: ok now, or once the backlog holding that
        ban is written (an acknowledged ban is in the store)."""
        if key in self.backlog:
            self._backlog_acks.append(d)
            if d.id:
                self._backlog_ids.add(d.id)
        else:
            self.ack_ok(d)

    def nack(self, d: BanDecision, error: str, final: bool = False) -> None:
        if d.id and d.worker >= 0:
            self.ack(d.worker, DecisionAck(id=d.id, ok=False, error=error, final=final))

    def loud(self, what: str, msg: str, *args: object) -> None:
        """An ERROR line, at most once per LOUD_EVERY seconds per `what`."""
        now = time.monotonic()
        if now >= self._loud_at.get(what, 0.0):
            self._loud_at[what] = now + LOUD_EVERY
            log.error(msg, *args)
