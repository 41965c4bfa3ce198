"""The firewall's side of the CrowdSec fleet (issue 16): outbox and remote decisions.

The firewall stays the single writer of kernel and store; the fleet connector
(fsguard_fleet, its own process) does all HTTP and talks to the firewall over the
control socket:

- push: every new local ban (rule or manual) queues an alert in `crowdsec_outbox` inside
  the ban's own transaction (Store.on_bans_added); a local unban of a ban that was pushed
  or queued queues a delete (Store.on_ban_removed). The connector takes due items with
  `crowdsec_outbox_due` and reports with `crowdsec_outbox_settle`. Bans that came from
  the LAPI (source "upstream") are never queued.
- pull: `crowdsec_apply` takes the validated stream. `crowdsec_decisions` remembers which
  LAPI decision ids cover which key, so a deleted id lifts only a ban that exists because
  of the LAPI; a local ban stays. A startup stream is the whole truth: remote rows it
  does not list are deleted.

The tables live beside the versioned schema (`CREATE TABLE IF NOT EXISTS`), additive.
The remote bans themselves go in and out through fleet_pull.py.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from fsguard_firewall.stats_op import add_counters
from shared.config import Config
from shared.control import ControlError
from shared.crowdsec import ORIGIN, RemoteDecision, alert_for
from shared.ops import firewall as ops
from shared.ops.base import Empty, OpTable
from shared.ops.firewall_bans import CrowdsecStats
from shared.ops.firewall_state import (
    ApplyRequest,
    CrowdsecApply,
    OutboxDepth,
    OutboxDue,
    OutboxDueRequest,
    OutboxSettleRequest,
)

from .backend import Element, FirewallError
from .entries import BanEntry
from .fleet_pull import REMOTE_SOURCE, RemoteRow, ban_remote, element, lift_remote
from .store import BanRecord, Store, StoreError

if TYPE_CHECKING:
    from .firewall import Firewall

log = logging.getLogger("fsguard.firewall")

OUTBOX_MAX = 100_000
PUSHED_SOURCES = ("rule", "manual")

_TABLES = (
    """CREATE TABLE IF NOT EXISTS crowdsec_outbox (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('alert','delete')),
        ban_key TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL, last_error TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS crowdsec_pushed (
        key TEXT PRIMARY KEY, until REAL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS crowdsec_decisions (
        id INTEGER PRIMARY KEY, key TEXT NOT NULL, origin TEXT NOT NULL,
        scenario TEXT NOT NULL, expires REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS crowdsec_decisions_key ON crowdsec_decisions (key)",
)


class FleetState:
    """Outbox and remote-decision bookkeeping; attach() wires it to a Firewall."""

    def __init__(self, config: Config, store_of: Callable[[], Store]) -> None:
        """`store_of` returns the firewall's current store (a degraded firewall swaps its
        scratch store for the real one: the tables and hooks follow)."""
        self.config = config
        self._store_of = store_of
        self._bound: Store | None = None
        cs = config.security.crowdsec
        self.push = cs.push
        self.simulated = cs.push_simulated
        self.fw: Firewall | None = None
        self.queued = 0
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self.applied = 0
        self.removed = 0
        self.refused = 0
        self.invalid = 0
        self.last_apply: CrowdsecApply | None = None
        self.last_sync = 0.0  # wall time of the last stream the firewall applied
        self.stream_errors = 0
        self.skipped = 0
        self._next_prune = 0.0
        self._bind()

    @property
    def store(self) -> Store:
        return self._bind()

    def _bind(self) -> Store:
        """Tables and transaction hooks on the current store (once per store)."""
        store = self._store_of()
        if store is self._bound:
            return store
        with store._tx("crowdsec tables") as db:
            for sql in _TABLES:
                db.execute(sql)
        if self.push:
            store.on_bans_added.append(self._queue_alerts)
        store.on_ban_removed.append(self._queue_delete)
        self._bound = store
        return store

    def attach(self, fw: Firewall) -> None:
        self.fw = fw

    def _firewall(self) -> Firewall:
        if self.fw is None:
            raise RuntimeError("FleetState.attach was not called")
        return self.fw

    # --- push (inside the store's transactions) -------------------------------------

    def _queue_alerts(self, db: sqlite3.Connection, records: list[BanRecord]) -> None:
        rows = []
        for r in records:
            if r.source not in PUSHED_SOURCES:
                continue
            count = r.evidence.get("count", 1)
            alert = alert_for(
                r.key, r.rule or r.source, r.reason, r.created, r.expires,
                count if isinstance(count, int) else 1, simulated=self.simulated,
            )  # fmt: skip
            rows.append(("alert", r.key, json.dumps(alert, separators=(",", ":")), r.created))
        if not rows:
            return
        pending = int(db.execute("SELECT COUNT(*) FROM crowdsec_outbox").fetchone()[0])
        room = max(0, OUTBOX_MAX - pending)
        if len(rows) > room:
            self.dropped += len(rows) - room
            log.error("crowdsec outbox full (%d): %d bans not pushed", OUTBOX_MAX, len(rows) - room)
            rows = rows[:room]
        db.executemany(
            "INSERT INTO crowdsec_outbox (kind, ban_key, payload, created) VALUES (?,?,?,?)", rows
        )
        self.queued += len(rows)

    def _queue_delete(self, db: sqlite3.Connection, key: str) -> None:
        """A removed ban this node pushed (or queued) is deleted on the LAPI too."""
        pushed = db.execute("SELECT 1 FROM crowdsec_pushed WHERE key = ?", (key,)).fetchone()
        queued = db.execute(
            "SELECT 1 FROM crowdsec_outbox WHERE ban_key = ? AND kind = 'alert'", (key,)
        ).fetchone()
        if pushed is None and queued is None:
            return
        db.execute("DELETE FROM crowdsec_pushed WHERE key = ?", (key,))
        db.execute(
            "INSERT INTO crowdsec_outbox (kind, ban_key, payload, created) VALUES (?,?,?,?)",
            ("delete", key, "", time.time()),
        )
        self.queued += 1

    # --- control ops ----------------------------------------------------------------

    def tick(self) -> None:
        self._bind()  # right after Durable.tick, which may have swapped the store
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + 60.0
            self.prune(time.time())

    def bind(self, table: OpTable) -> None:
        """Bind the crowdsec_* ops; `stats` (bound by ControlOps) gains our counters."""
        add_counters(table, self.fill)
        table.bind(ops.CROWDSEC_OUTBOX_DUE, self.op_due)
        table.bind(ops.CROWDSEC_OUTBOX_SETTLE, self.op_settle)
        table.bind(ops.CROWDSEC_APPLY, self.op_apply)
        table.bind(ops.CROWDSEC_STATS, self.op_stats)

    def op_stats(self, req: Empty) -> CrowdsecStats:
        out = CrowdsecStats()
        self.fill(out)
        return out

    def op_due(self, req: OutboxDueRequest) -> OutboxDue:
        """The oldest outbox items, in order: [[id, kind, key, payload], ...]."""
        limit = req.limit
        if not 1 <= limit <= 5000:
            raise ControlError("limit must be an integer 1..5000", 400)
        with self.store._read("crowdsec_outbox_due") as db:
            rows = db.execute(
                "SELECT id, kind, ban_key, payload FROM crowdsec_outbox ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return OutboxDue(items=[(r[0], r[1], r[2], r[3]) for r in rows], depth=self.depth())

    def op_settle(self, req: OutboxSettleRequest) -> OutboxDepth:
        """sent: ids done (or refused for good); failed: [[id, error], ...] kept for retry."""
        sent, failed = req.sent, req.failed
        now = time.time()
        with self.store._tx("crowdsec_outbox_settle") as db:
            for item_id in sent:
                row = db.execute(
                    "DELETE FROM crowdsec_outbox WHERE id = ? RETURNING kind, ban_key, payload",
                    (item_id,),
                ).fetchone()
                if row is None or row[0] != "alert":
                    continue
                ban = db.execute("SELECT expires FROM bans WHERE key = ?", (row[1],)).fetchone()
                if ban is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO crowdsec_pushed (key, until) VALUES (?, ?)",
                        (row[1], ban[0]),
                    )
            db.executemany(
                "UPDATE crowdsec_outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                [(str(err)[:300], item_id) for item_id, err in failed],
            )
            db.execute(
                "DELETE FROM crowdsec_pushed WHERE until IS NOT NULL AND until <= ?", (now,)
            )
        self.sent += len(sent)
        self.failed += len(failed)
        return OutboxDepth(depth=self.depth())

    def depth(self) -> int:
        with self.store._read("crowdsec_outbox_depth") as db:
            return int(db.execute("SELECT COUNT(*) FROM crowdsec_outbox").fetchone()[0])

    def fill(self, out: CrowdsecStats) -> None:
        """Our counters, in the `crowdsec_stats` reply or the firewall's `stats`."""
        try:
            depth: int | None = self.depth()
            with self.store._read("crowdsec_counters") as db:
                row = db.execute("SELECT COUNT(*) FROM crowdsec_decisions").fetchone()
            remote: int | None = int(row[0])
        except StoreError:  # stats must answer even when the store does not
            depth = remote = None
        by_origin = {"local": 0, ORIGIN: 0}
        if self.fw is not None:
            for entry in self.fw.store.active(time.time()):
                by_origin[origin_of(entry)] += 1
        out.crowdsec_active_by_origin = by_origin
        out.crowdsec_push_queue_depth = depth
        out.crowdsec_push_queued = self.queued
        out.crowdsec_push_dropped = self.dropped
        out.crowdsec_pushed = self.sent
        out.crowdsec_push_failures = self.failed
        out.crowdsec_remote_decisions = remote
        out.crowdsec_applied = self.applied
        out.crowdsec_removed = self.removed
        out.crowdsec_refused = self.refused
        out.crowdsec_invalid = self.invalid
        out.crowdsec_skipped = self.skipped
        out.crowdsec_last_apply = self.last_apply
        out.crowdsec_stream_errors = self.stream_errors
        out.crowdsec_last_sync = self.last_sync
        out.crowdsec_pull_enabled = self.config.security.crowdsec.pull
        out.crowdsec_sync_lag = time.time() - self.last_sync if self.last_sync else None

    # --- pull -----------------------------------------------------------------------

    def op_apply(self, req: ApplyRequest) -> CrowdsecApply:
        listed = set(req.present) if req.present is not None else None
        try:
            result = self.apply(req.new, req.deleted, startup=req.startup, present=listed)
        except FirewallError as exc:
            raise ControlError(f"firewall error: {exc}", 500) from None
        self.last_sync = time.time()
        self.stream_errors = req.stream_errors
        self.skipped += req.skipped
        return result

    def apply(
        self, new: list[RemoteDecision], deleted: list[RemoteDecision], *, startup: bool,
        present: set[int] | None = None,
    ) -> CrowdsecApply:  # fmt: skip
        """Apply one stream answer (or one chunk of it) in one batch (kernel: one restore;
        store: few commits). With startup, remote rows whose id is neither in `new` nor in
        `present` (the whole startup answer's ids, when sent in chunks) are deleted."""
        fw = self._firewall()
        now = time.time()
        started = time.perf_counter()
        rows: dict[int, RemoteRow] = {}
        elems: dict[str, Element] = {}
        refused = invalid = 0
        for d in new:
            try:
                elem = element(fw, d.value)
            except ValueError:
                invalid += 1
                continue
            key = str(elem)
            if fw.refuse(elem):  # protected (own host, loopback ...), trusted, whitelisted
                refused += 1
                continue
            elems[key] = elem
            rows[d.id] = RemoteRow(d.id, key, d.origin, d.scenario, now + d.seconds)
        with self.store._tx("crowdsec_apply") as db:
            gone_ids = {d.id for d in deleted} - rows.keys()
            if startup:  # the startup stream lists every active decision
                known = {r[0] for r in db.execute("SELECT id FROM crowdsec_decisions")}
                gone_ids |= known - rows.keys() - (present or set())
            affected = _column_in(
                db, "DELETE FROM crowdsec_decisions WHERE id IN ({marks}) RETURNING key", gone_ids
            )
            db.executemany(
                "INSERT OR REPLACE INTO crowdsec_decisions VALUES (?,?,?,?,?)",
                [msgspec.structs.astuple(r) for r in rows.values()],
            )
            still = _column_in(
                db, "SELECT DISTINCT key FROM crowdsec_decisions WHERE key IN ({marks})", affected
            )
        added = ban_remote(fw, rows, elems, now)
        lifted = lift_remote(fw, [k for k in affected - still], now)
        self.applied += added
        self.removed += lifted
        self.refused += refused
        self.invalid += invalid
        self.last_apply = CrowdsecApply(
            at=now, applied=added, removed=lifted, refused=refused, invalid=invalid,
            new=len(new), deleted=len(deleted), seconds=round(time.perf_counter() - started, 4),
        )  # fmt: skip
        return self.last_apply

    def prune(self, now: float) -> None:
        with self.store._tx("crowdsec_prune") as db:
            db.execute("DELETE FROM crowdsec_decisions WHERE expires <= ?", (now,))
            db.execute("DELETE FROM crowdsec_pushed WHERE until IS NOT NULL AND until <= ?", (now,))


def origin_of(entry: BanEntry) -> str:
    """Origin label: "crowdsec" for a ban the LAPI gave us, "local" for the node's own."""
    return ORIGIN if entry.source == REMOTE_SOURCE else "local"


def _column_in(
    db: sqlite3.Connection, sql: str, values: set[int] | set[str], size: int = 500
) -> set[str]:
    """The first column of `sql` run over `values` in chunks (SQLite caps bound
    parameters); `sql` holds `{marks}` where the placeholders go, never a value."""
    out: set[str] = set()
    ordered: list[int | str] = sorted(values)
    for i in range(0, len(ordered), size):
        chunk = ordered[i : i + size]
        marks = ",".join("?" * len(chunk))
        out.update(row[0] for row in db.execute(sql.format(marks=marks), chunk))
    return out
