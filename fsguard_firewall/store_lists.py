"""The whitelist and the untrusted domain patterns."""

from __future__ import annotations

import msgspec

from .store_db import StoreDb
from .store_records import (
    CONTROL_CHARS,
    PATTERN_SOURCES,
    WHITELIST_SOURCES,
    WhitelistRecord,
    normalize_key,
)
from .store_schema import WL_COLS, WL_INSERT, wl_from_row, wl_row


class ListTables(StoreDb):
    """The whitelist and untrusted_patterns tables."""

    # --- whitelist ----------------------------------------------------------------

    def whitelist_add(self, rec: WhitelistRecord) -> None:
        """Insert or replace the entry for `rec.ip` (a normalized address or network)."""
        ip = normalize_key(rec.ip)[0]
        if ip != rec.ip:
            raise ValueError(f"whitelist ip {rec.ip!r} is not normalized (expected {ip!r})")
        if rec.source not in WHITELIST_SOURCES:
            raise ValueError(f"whitelist {ip}: unknown source {rec.source!r}")
        with self._tx("whitelist_add") as db:
            seen = rec if rec.last_seen else msgspec.structs.replace(rec, last_seen=rec.added)
            db.execute(WL_INSERT, wl_row(seen))

    def whitelist_remove(self, ip: str) -> bool:
        with self._tx("whitelist_remove") as db:
            return db.execute("DELETE FROM whitelist WHERE ip = ?", (ip,)).rowcount > 0

    def whitelist_get(self, ip: str, now: float) -> WhitelistRecord | None:
        """The entry if it is active at `now` (expired ones are hidden, as in Go)."""
        with self._read("whitelist_get") as db:
            row = db.execute(
                f"SELECT {WL_COLS} FROM whitelist WHERE ip = ? "
                "AND (expires IS NULL OR expires > ?)",
                (ip, now),
            ).fetchone()
        return None if row is None else wl_from_row(row)

    def whitelist_active(self, now: float) -> list[WhitelistRecord]:
        with self._read("whitelist_active") as db:
            rows = db.execute(
                f"SELECT {WL_COLS} FROM whitelist WHERE expires IS NULL OR expires > ?", (now,)
            ).fetchall()
        return [wl_from_row(r) for r in rows]

    # --- untrusted patterns ---------------------------------------------------------

    def pattern_add(self, pattern: str, now: float, source: str = "runtime") -> bool:
        """False when the pattern already exists."""
        if not pattern.strip() or CONTROL_CHARS.search(pattern):
            raise ValueError(f"invalid untrusted pattern: {pattern!r}")
        if source not in PATTERN_SOURCES:
            raise ValueError(f"unknown pattern source {source!r}")
        with self._tx("pattern_add") as db:
            return (
                db.execute(
                    "INSERT OR IGNORE INTO untrusted_patterns VALUES (?, ?, ?)",
                    (pattern, now, source),
                ).rowcount
                > 0
            )

    def pattern_remove(self, pattern: str) -> bool:
        with self._tx("pattern_remove") as db:
            return (
                db.execute("DELETE FROM untrusted_patterns WHERE pattern = ?", (pattern,)).rowcount
                > 0
            )

    def patterns(self) -> list[tuple[str, str]]:
        """(pattern, source) pairs, sorted by pattern."""
        with self._read("patterns") as db:
            return [
                (r[0], r[1])
                for r in db.execute(
                    "SELECT pattern, source FROM untrusted_patterns ORDER BY pattern"
                )
            ]
