"""The ban ledger: the one owner of decision ids, the ban store, the kernel backend and
the acknowledgements. It knows nothing of sockets or the process loop.

Rules it keeps (issue 10 §3):
- Kernel first, then the store: a ban is recorded (and its decision id remembered as
  processed) only once the kernel holds it, and a decision is acknowledged ok only then.
- A ban the kernel refuses (a full set, a timeout) is never acknowledged ok nor recorded:
  it waits in `pending` and is re-applied with exponential backoff until the kernel takes
  it or it expires (then its worker gets a final negative ack). A full set is logged at
  ERROR (rate-limited) and counted.
- A failure never touches an earlier ban: an extension the kernel refuses leaves the
  store row and the kernel entry exactly as they were.
- When the store cannot write (full disk, read-only directory) the kernel keeps
  enforcing: applied bans wait in `backlog` (unacknowledged) and are written when the
  store works again (`flush_backlog`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from shared.messages import BanDecision, DecisionAck

from .backend import MAX_TIMEOUT, Element, FirewallError, KernelBackend
from .entries import BanEntry, BanStore
from .stats import Stats
from .store import StoreError

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
class _Pending:
    intent: Intent
    next_at: float
    error: str


class BanLedger:
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
        self.pending: dict[str, _Pending] = {}  # key -> refused ban being retried
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
            entry = self.backlog[key]
            return entry if entry is not None and entry.active(now) else None
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

    # --- applying ----------------------------------------------------------------------

    def apply(self, intents: list[Intent]) -> list[Intent]:
        """Kernel, then store, for one batch; returns the intents the kernel holds now.
        The others wait in `pending` (never recorded, never acknowledged ok).

        The kernel works in a thread while the store writes the rows; the store commits
        only once the kernel answered, and only the rows the kernel took."""
        if not intents:
            return []
        failed: dict[str, str] = {}
        gate: Callable[[], Collection[str]] | None = None
        if self.kernel_enabled:
            outcome: list[BaseException] = []
            bans = [(i.elem, i.timeout) for i in intents]

            def run() -> None:
                try:
                    self.kernel.apply(bans)
                except BaseException as exc:  # handed to the loop's thread below
                    outcome.append(exc)
                self.kernel_ts = time.time()

            worker = threading.Thread(target=run, name="kernel-apply", daemon=True)
            worker.start()

            def gate() -> Collection[str]:
                worker.join()
                if outcome:
                    if not isinstance(outcome[0], FirewallError):
                        raise outcome[0]
                    failed.update(self._kernel_failed(outcome[0], intents))
                return failed.keys()

        done = self._record(intents, gate)
        for intent in intents if failed else ():
            if intent.key in failed:
                self._defer(intent, failed[intent.key])
        return done

    def _kernel_failed(self, exc: FirewallError, intents: list[Intent]) -> dict[str, str]:
        failed = dict(exc.failed) or {i.key: str(exc) for i in intents}
        self.stats.kernel_errors += 1
        if exc.full:
            self.stats.kernel_full += 1
            self.loud(
                "full",
                "kernel ban set is full: %d bans refused, retried until they expire (raise "
                "the set's maxelem; see fsguard_firewall_pending_bans): %s",
                len(failed), exc,
            )  # fmt: skip
        else:
            self.loud("kernel", "kernel refused %d bans, retrying: %s", len(failed), exc)
        return failed

    def loud(self, what: str, msg: str, *args: object) -> None:
        """An ERROR line, at most once per LOUD_EVERY seconds per `what`."""
        now = time.monotonic()
        if now >= self._loud_at.get(what, 0.0):
            self._loud_at[what] = now + LOUD_EVERY
            log.error(msg, *args)

    def _record(
        self, intents: list[Intent], gate: Callable[[], Collection[str]] | None = None
    ) -> list[Intent]:
        """Store what the kernel holds (`gate`: the keys it refused, asked once, before
        the commit), then acknowledge. A store failure keeps the entries in the backlog
        (enforced, unacknowledged) until `flush_backlog`. Returns the intents kept."""
        refused: set[str] | None = None

        def once() -> Collection[str]:
            nonlocal refused
            if refused is None:
                refused = set(gate()) if gate is not None else set()
            return refused

        stored = False
        if not self.backlog:
            try:
                self.store.put_many([i.entry for i in intents], once)
                stored = True
            except StoreError as exc:
                self.stats.store_errors += 1
                self.loud("store", "state store cannot write, bans enforced in the kernel "
                          "only (written when it works again): %s", exc)  # fmt: skip
        skip = once()
        done = [i for i in intents if i.key not in skip] if skip else intents
        for intent in done:
            if stored:
                for d in intent.decisions:
                    self.ack_ok(d)
            else:
                self.backlog[intent.key] = intent.entry
                self._backlog_acks.extend(intent.decisions)
                self._backlog_ids.update(d.id for d in intent.decisions if d.id)
        return done

    def record(self, entries: list[BanEntry]) -> bool:
        """Write entries the kernel holds to the store; False: kept in the backlog."""
        if not entries:
            return True
        if not self.backlog:
            try:
                self.store.put_many(entries)
                return True
            except StoreError as exc:
                self.stats.store_errors += 1
                self.loud("store", "state store cannot write, bans enforced in the kernel "
                          "only (written when it works again): %s", exc)  # fmt: skip
        for entry in entries:
            self.backlog[entry.ip] = entry
        return False

    def flush_backlog(self) -> bool:
        """Write the backlog to the store; True when it is empty afterwards."""
        if not self.backlog:
            return True
        now = self.clock()
        adds = [e for e in self.backlog.values() if e is not None and e.active(now)]
        removes = [k for k, e in self.backlog.items() if e is None]
        try:
            self.store.put_many(adds)
            for key in removes:
                self.store.remove(key)
        except StoreError as exc:
            self.loud("store", "state store still cannot write (%d bans waiting): %s",
                      len(self.backlog), exc)  # fmt: skip
            return False
        log.warning("state store writable again: %d backlog entries written", len(self.backlog))
        self.backlog.clear()
        acks, self._backlog_acks = self._backlog_acks, []
        self._backlog_ids.clear()
        for d in acks:
            self.ack_ok(d)
        return True

    # --- refused bans ------------------------------------------------------------------

    def _defer(self, intent: Intent, error: str) -> None:
        prev = self.pending.get(intent.key)
        intent.attempts += 1
        if prev is not None:
            intent.decisions = [*prev.intent.decisions, *intent.decisions]
            intent.attempts = max(intent.attempts, prev.intent.attempts + 1)
        elif len(self.pending) >= PENDING_MAX:
            log.error("pending bans full (%d): %s not retried", PENDING_MAX, intent.key)
            for d in intent.decisions:
                self.nack(d, f"kernel refused: {error}")
            return
        delay = min(RETRY_CAP, RETRY_BASE * 2 ** (intent.attempts - 1))
        self.pending[intent.key] = _Pending(intent, time.monotonic() + delay, error)
        for d in intent.decisions:
            if d.id:
                self._pending_ids[d.id] = intent.key
                self.nack(d, f"pending: kernel refused ({error}), retrying")

    def pending_intent(self, key: str) -> Intent | None:
        p = self.pending.get(key)
        return None if p is None else p.intent

    def replace_pending(self, intent: Intent) -> None:
        """A newer, longer ban for a key whose earlier one waits: it takes the slot."""
        prev = self.pending.pop(intent.key, None)
        if prev is not None:
            intent.decisions = [*prev.intent.decisions, *intent.decisions]

    def retry_due(self) -> list[Intent]:
        """Re-apply refused bans whose backoff elapsed; expired ones are given up."""
        if not self.pending:
            return []
        now_m, now = time.monotonic(), self.clock()
        due: list[Intent] = []
        for key, p in list(self.pending.items()):
            if p.next_at > now_m:
                continue
            entry = p.intent.entry
            del self.pending[key]
            if not entry.active(now):
                self.stats.expired_pending += 1
                self._forget_ids(p.intent)
                for d in p.intent.decisions:
                    self.nack(d, "expired before the kernel took it", final=True)
                continue
            if entry.expires_at:
                p.intent.timeout = max(1, min(p.intent.timeout, int(entry.expires_at - now)))
            due.append(p.intent)  # apply() puts it back if the kernel refuses again
        if not due:
            return []
        self.stats.retries += len(due)
        done = self.apply(due)
        for intent in done:
            self._forget_ids(intent)
        if done:
            log.warning("re-applied %d refused bans; %d still pending", len(done),
                        len(self.pending))  # fmt: skip
        return done

    def _forget_ids(self, intent: Intent) -> None:
        for d in intent.decisions:
            self._pending_ids.pop(d.id, None)

    # --- synchronous operations (manual bans, unbans) -----------------------------------

    def ban_now(self, intent: Intent) -> BanEntry:
        """Kernel and store as one unit: a manual ban. FirewallError: nothing changed.
        The ban never shortens an existing one (caller passes the effective expiry)."""
        if self.kernel_enabled:
            self.kernel.apply([(intent.elem, intent.timeout)])
        self._record([intent])
        return intent.entry

    def unban_now(self, elem: Element) -> None:
        """Kernel first, then store (a failing store: a removal in the backlog)."""
        key = str(elem)
        if self.kernel_enabled:
            self.kernel.remove([elem])
        dropped = self.pending.pop(key, None)
        if dropped is not None:
            self._forget_ids(dropped.intent)
            for d in dropped.intent.decisions:
                self.nack(d, "unbanned while pending", final=True)
        if self.backlog or key in self.backlog:
            self.backlog[key] = None
            return
        try:
            self.store.remove(key)
        except StoreError as exc:
            self.stats.store_errors += 1
            self.loud("store", "state store cannot write, unban kept in memory: %s", exc)
            self.backlog[key] = None

    def unban_many(self, elems: list[Element]) -> None:
        """unban_now for many: one kernel call, one store transaction when it can."""
        if not elems:
            return
        keys = [str(e) for e in elems]
        if self.kernel_enabled:
            self.kernel.remove(elems)
        for key in keys:
            dropped = self.pending.pop(key, None)
            if dropped is not None:
                self._forget_ids(dropped.intent)
                for d in dropped.intent.decisions:
                    self.nack(d, "unbanned while pending", final=True)
        remove_many = getattr(self.store, "remove_many", None)
        if not self.backlog:
            try:
                if remove_many is not None:
                    remove_many(keys)
                else:
                    for key in keys:
                        self.store.remove(key)
                return
            except StoreError as exc:
                self.stats.store_errors += 1
                self.loud("store", "state store cannot write, unbans kept in memory: %s", exc)
        for key in keys:
            self.backlog[key] = None

    def expire(self) -> None:
        """Drop expired entries from the store (incremental) and the backlog."""
        now = self.clock()
        for key in [k for k, e in self.backlog.items() if e is not None and not e.active(now)]:
            del self.backlog[key]
        try:
            self.store.purge_expired(now)
        except StoreError as exc:
            self.loud("store", "state store cannot purge expired bans: %s", exc)

    def wanted(self, now: float, entries: Iterable[BanEntry] | None = None) -> list[BanEntry]:
        return list(self.active(now) if entries is None else entries)
