"""Bans (the Go "blacklist"), processed decision ids, expiry and recidive history."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Collection, Sequence

import msgspec

from .store_db import StoreDb
from .store_records import BAN_SOURCES, BanRecord, Refused, fast_key
from .store_schema import BAN_COLS, BAN_INSERT, ban_row, bans_from_rows, chunks


def processed_in(db: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """The decision ids among `ids` in processed_decisions."""
    seen: set[str] = set()
    for chunk in chunks(ids):
        marks = ",".join("?" * len(chunk))
        seen.update(
            r[0]
            for r in db.execute(
                f"SELECT decision_id FROM processed_decisions WHERE decision_id IN ({marks})",
                chunk,
            )
        )
    return seen


class BanTables(StoreDb):
    """The bans and recidive tables."""

    # --- bans -----------------------------------------------------------------

    def add_bans(self, bans: Sequence[BanRecord]) -> list[BanRecord]:
        """Store a batch in one transaction; return the records newly inserted or extended.

        A record whose decision_id was already processed is skipped. A ban on an active
        key only extends it (later expiry, or permanent) and keeps its `created`; anything
        else is a no-op. Each new insertion (not an extension) adds one recidive row.
        Records are validated first (ValueError); `record.created` is the ban's "now".
        """
        return self.add_bans_reported(bans, None)[0]

    def add_bans_reported(
        self,
        bans: Sequence[BanRecord],
        report: Callable[[BanRecord], str] | None,
        gate: Callable[[], Collection[str]] | None = None,
    ) -> tuple[list[BanRecord], int]:
        """`add_bans`, plus an outbox entry (payload `report(record)`) for every new
        insertion in the same transaction, so a committed ban is never left unreported.
        Returns (changed records, reports queued); the outbox bound still applies.

        `gate`, called inside the transaction just before COMMIT, returns the keys that
        must not be committed (the kernel refused them while the rows were written): the
        transaction is rolled back and redone without them. Lets the caller overlap its
        kernel work with the SQL work while committing only what the kernel holds."""
        try:
            return self._add_bans(bans, report, gate)
        except Refused as refused:
            keep = [b for b in bans if b.key not in refused.keys]
            return self._add_bans(keep, report, None)

    def _add_bans(
        self,
        bans: Sequence[BanRecord],
        report: Callable[[BanRecord], str] | None,
        gate: Callable[[], Collection[str]] | None,
    ) -> tuple[list[BanRecord], int]:
        checked: list[BanRecord] = []
        for rec in bans:
            key, family = fast_key(rec.key)
            if key != rec.key:
                raise ValueError(f"ban key {rec.key!r} is not normalized (expected {key!r})")
            if rec.source not in BAN_SOURCES:
                raise ValueError(f"ban {key}: unknown source {rec.source!r}")
            if not math.isfinite(rec.created) or (
                rec.expires is not None and not math.isfinite(rec.expires)
            ):
                raise ValueError(f"ban {key}: timestamps must be finite")
            checked.append(
                rec if rec.family == family else msgspec.structs.replace(rec, family=family)
            )
        if not checked:
            if gate is not None:
                gate()
            return [], 0
        keys = list(dict.fromkeys(r.key for r in checked))
        ids = list(dict.fromkeys(r.decision_id for r in checked if r.decision_id))
        with self._tx("add_bans") as db:
            current: dict[str, tuple[float, float | None]] = {}
            for chunk in chunks(keys):
                marks = ",".join("?" * len(chunk))
                for key, created, expires in db.execute(
                    f"SELECT key, created, expires FROM bans WHERE key IN ({marks})", chunk
                ):
                    current[key] = (created, expires)
            seen = processed_in(db, ids)
            changed: dict[str, BanRecord] = {}
            new_keys: list[tuple[str, float]] = []
            new_ids: list[tuple[str, float]] = []
            for rec in checked:
                if rec.decision_id:
                    if rec.decision_id in seen:
                        continue
                    seen.add(rec.decision_id)
                    new_ids.append((rec.decision_id, rec.created))
                cur = current.get(rec.key)
                if cur is None or not (cur[1] is None or cur[1] > rec.created):
                    row = rec
                    new_keys.append((rec.key, rec.created))
                elif cur[1] is not None and (rec.expires is None or rec.expires > cur[1]):
                    row = msgspec.structs.replace(rec, created=cur[0])
                else:
                    continue
                current[rec.key] = (row.created, row.expires)
                changed[rec.key] = row
            db.executemany(BAN_INSERT, [ban_row(r) for r in changed.values()])
            db.executemany("INSERT INTO recidive (key, banned_at) VALUES (?, ?)", new_keys)
            db.executemany("INSERT OR IGNORE INTO processed_decisions VALUES (?, ?)", new_ids)
            queued = 0
            if report is not None and new_keys:
                pending = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
                for key, created in new_keys:
                    if pending >= self.outbox_max_pending:
                        break
                    if changed[key].source == "upstream":
                        continue  # a ban from the CrowdSec fleet is not this node's report
                    added = db.execute(
                        "INSERT OR IGNORE INTO outbox (ban_key, payload, next_attempt, created) "
                        "VALUES (?, ?, ?, ?)",
                        (key, report(changed[key]), created, created),
                    ).rowcount
                    pending += added
                    queued += added
            if gate is not None:
                refused = set(gate())
                if refused:
                    raise Refused(refused)
            if new_keys and self.on_bans_added:
                inserted = [changed[k] for k in dict.fromkeys(k for k, _ in new_keys)]
                for hook in self.on_bans_added:
                    hook(db, inserted)
        return list(changed.values()), queued

    def processed_ids(self, ids: Sequence[str]) -> set[str]:
        """The decision ids among `ids` already processed (one query per IN_CHUNK)."""
        with self._read("seen_decisions") as db:
            return processed_in(db, ids)

    def seen_decision(self, decision_id: str) -> bool:
        with self._read("seen_decision") as db:
            row = db.execute(
                "SELECT 1 FROM processed_decisions WHERE decision_id = ?", (decision_id,)
            ).fetchone()
        return row is not None

    def remove_ban(self, key: str) -> bool:
        """Delete a ban (and its pending report: an unbanned address is not reported)."""
        with self._tx("remove_ban") as db:
            gone = db.execute("DELETE FROM bans WHERE key = ?", (key,)).rowcount > 0
            db.execute("DELETE FROM outbox WHERE ban_key = ?", (key,))
            if gone:
                for hook in self.on_ban_removed:
                    hook(db, key)
        return gone

    def remove_bans(self, keys: Sequence[str]) -> int:
        """remove_ban for many keys in one transaction; returns how many existed."""
        gone = 0
        with self._tx("remove_bans") as db:
            for key in keys:
                if db.execute("DELETE FROM bans WHERE key = ?", (key,)).rowcount > 0:
                    gone += 1
                    db.execute("DELETE FROM outbox WHERE ban_key = ?", (key,))
                    for hook in self.on_ban_removed:
                        hook(db, key)
        return gone

    def get_ban(self, key: str) -> BanRecord | None:
        """The stored row, active or expired-but-not-yet-purged; check `.active(now)`."""
        with self._read("get_ban") as db:
            row = db.execute(f"SELECT {BAN_COLS} FROM bans WHERE key = ?", (key,)).fetchone()
        return None if row is None else bans_from_rows([row])[0]

    def active_bans(self, now: float) -> list[BanRecord]:
        with self._read("active_bans") as db:
            rows = db.execute(
                f"SELECT {BAN_COLS} FROM bans WHERE expires IS NULL OR expires > ?", (now,)
            ).fetchall()
        return bans_from_rows(rows)

    def ban_count(self) -> int:
        with self._read("ban_count") as db:
            return int(db.execute("SELECT COUNT(*) FROM bans").fetchone()[0])

    def expire(self, now: float, limit: int = 1000) -> list[str]:
        """Delete at most `limit` expired bans (and their pending reports); return their keys.

        Call repeatedly (e.g. every few seconds) so a mass expiry never holds the
        writer for long.
        """
        with self._tx("expire") as db:
            keys = [
                r[0]
                for r in db.execute(
                    "SELECT key FROM bans WHERE expires IS NOT NULL AND expires <= ? "
                    "ORDER BY expires LIMIT ?",
                    (now, limit),
                )
            ]
            db.executemany("DELETE FROM bans WHERE key = ?", [(k,) for k in keys])
            db.executemany("DELETE FROM outbox WHERE ban_key = ?", [(k,) for k in keys])
        return keys

    # --- recidive ---------------------------------------------------------------

    def record_recidive(self, key: str, at: float) -> None:
        """Only for bans not stored through add_bans (which records its own)."""
        with self._tx("record_recidive") as db:
            db.execute("INSERT INTO recidive (key, banned_at) VALUES (?, ?)", (key, at))

    def recidive_count(self, key: str, since: float) -> int:
        """Bans of `key` recorded at or after `since`."""
        with self._read("recidive_count") as db:
            row = db.execute(
                "SELECT COUNT(*) FROM recidive WHERE key = ? AND banned_at >= ?", (key, since)
            ).fetchone()
        return int(row[0])

    def recidive_counts(self, keys: Sequence[str], since: float) -> dict[str, int]:
        """Bans recorded at or after `since`, for each of `keys` that has any (one query
        per chunk, so a decision batch costs one round trip)."""
        counts: dict[str, int] = {}
        with self._read("recidive_counts") as db:
            for chunk in chunks(list(dict.fromkeys(keys))):
                marks = ",".join("?" * len(chunk))
                for key, n in db.execute(
                    f"SELECT key, COUNT(*) FROM recidive WHERE key IN ({marks}) "
                    "AND banned_at >= ? GROUP BY key",
                    [*chunk, since],
                ):
                    counts[key] = int(n)
        return counts

    def prune(
        self,
        now: float,
        *,
        recidive_keep: float,
        decisions_keep: float,
        decisions_max: int = 1_000_000,
        limit: int = 10_000,
    ) -> dict[str, int]:
        """Bounded cleanup (at most `limit` rows of each kind per call): recidive rows
        older than `recidive_keep`, decision ids older than `decisions_keep` or beyond the
        newest `decisions_max`, expired whitelist entries. Returns rows removed by kind."""
        with self._tx("prune") as db:
            counts = {
                "recidive": db.execute(
                    "DELETE FROM recidive WHERE rowid IN "
                    "(SELECT rowid FROM recidive WHERE banned_at < ? LIMIT ?)",
                    (now - recidive_keep, limit),
                ).rowcount,
                "decisions": db.execute(
                    "DELETE FROM processed_decisions WHERE decision_id IN "
                    "(SELECT decision_id FROM processed_decisions WHERE at < ? LIMIT ?)",
                    (now - decisions_keep, limit),
                ).rowcount,
                "whitelist": db.execute(
                    "DELETE FROM whitelist WHERE ip IN (SELECT ip FROM whitelist "
                    "WHERE expires IS NOT NULL AND expires <= ? LIMIT ?)",
                    (now, limit),
                ).rowcount,
            }
            total = int(db.execute("SELECT COUNT(*) FROM processed_decisions").fetchone()[0])
            counts["decisions_over_cap"] = db.execute(
                "DELETE FROM processed_decisions WHERE decision_id IN "
                "(SELECT decision_id FROM processed_decisions ORDER BY at LIMIT ?)",
                (min(limit, max(0, total - decisions_max)),),
            ).rowcount
        return counts
