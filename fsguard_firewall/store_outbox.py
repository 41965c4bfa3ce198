"""The chanDaemon report outbox: queued with its ban, retried with backoff."""

from __future__ import annotations

from collections.abc import Sequence

from .store_db import StoreDb
from .store_records import OutboxItem
from .store_schema import OUTBOX_COLS, OUTBOX_FIELDS, from_row


class OutboxTable(StoreDb):
    """The outbox table."""

    # --- chanDaemon outbox -------------------------------------------------------------

    def enqueue(self, ban_key: str, payload: str, now: float) -> bool:
        """Queue one report. False if one for `ban_key` is already pending or the outbox
        holds outbox_max_pending entries."""
        return self.enqueue_many([(ban_key, payload)], now) == 1

    def enqueue_many(self, items: Sequence[tuple[str, str]], now: float) -> int:
        """Queue several reports in one transaction; returns how many were queued."""
        queued = 0
        with self._tx("enqueue") as db:
            pending = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            for ban_key, payload in items:
                if pending >= self.outbox_max_pending:
                    break
                added = db.execute(
                    "INSERT OR IGNORE INTO outbox (ban_key, payload, next_attempt, created) "
                    "VALUES (?, ?, ?, ?)",
                    (ban_key, payload, now, now),
                ).rowcount
                pending += added
                queued += added
        return queued

    def is_pending(self, ban_key: str) -> bool:
        with self._read("is_pending") as db:
            row = db.execute("SELECT 1 FROM outbox WHERE ban_key = ?", (ban_key,)).fetchone()
        return row is not None

    def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        with self._read("due") as db:
            rows = db.execute(
                f"SELECT {OUTBOX_COLS} FROM outbox WHERE next_attempt <= ? "
                "ORDER BY next_attempt, id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [from_row(OutboxItem, OUTBOX_FIELDS, r) for r in rows]

    def backoff(self, attempts: int) -> float:
        """Delay before the next try after `attempts` failures: base·2^(n-1), capped."""
        return float(min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempts - 1, 60)))

    def mark_sent(self, item_id: int) -> None:
        self.settle([item_id], [], 0.0)

    def mark_failed(self, item_id: int, now: float, error: str) -> bool:
        """Count a failed attempt; False when max_attempts was reached and it was dropped."""
        return self.settle([], [(item_id, error)], now) == 0

    def settle(self, sent: Sequence[int], failed: Sequence[tuple[int, str]], now: float) -> int:
        """Apply a round of results in one transaction; returns how many were dropped."""
        dropped = 0
        with self._tx("settle") as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in sent])
            for item_id, error in failed:
                row = db.execute("SELECT attempts FROM outbox WHERE id = ?", (item_id,)).fetchone()
                if row is None:
                    continue
                attempts = int(row[0]) + 1
                if self.max_attempts and attempts >= self.max_attempts:
                    db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))
                    dropped += 1
                    continue
                db.execute(
                    "UPDATE outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
                    (attempts, now + self.backoff(attempts), error[:200], item_id),
                )
        return dropped

    def pending_count(self) -> int:
        with self._read("pending_count") as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
