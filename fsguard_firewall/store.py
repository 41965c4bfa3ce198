"""Durable firewall state in SQLite: bans (the Go "blacklist"), whitelist, untrusted
patterns, recidive history, the chanDaemon outbox and processed decision ids.

One process owns the file (the firewall): an exclusive flock on `<path>.lock` refuses a
second owner. The connection runs in autocommit mode and every write is one explicit
`BEGIN IMMEDIATE … COMMIT`, so a batch is all or nothing.

Durability: WAL with synchronous=FULL. WAL+NORMAL survives a process crash but may lose
the last commits on power loss; FULL fsyncs the WAL at each commit, so anything a caller
was told is stored survives power loss too (DESIGN invariant 5). The cost is one fsync
per transaction, which batching (add_bans, enqueue_many, settle) amortises.

Opening never starts silently from scratch: a corrupted file, a foreign SQLite file, an
unwritable location or a schema newer than this code raise StoreError, and the caller
exits non-zero.
"""

from __future__ import annotations

import fcntl
import ipaddress
import math
import os
import re
import socket
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.iputil import parse_ip

BAN_SOURCES = ("rule", "manual", "upstream")
WHITELIST_SOURCES = ("learned", "manual")
PATTERN_SOURCES = ("config", "runtime")
EXPORT_FORMAT = "fsguard-state"
EXPORT_VERSION = 1
DB_FILENAME = "fsguard.db"
_MAX_TEXT = 1024  # imported strings longer than this are refused
_IN_CHUNK = 500  # parameters per `IN (…)` query, well under SQLite's limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StoreError(Exception):
    """The state file cannot be used; the message says which file and why."""


class ImportDataError(StoreError, ValueError):
    """Import data refused; nothing was written. The message names the bad entry."""


class _Refused(Exception):
    def __init__(self, keys: set[str]) -> None:
        super().__init__(f"{len(keys)} keys refused")
        self.keys = keys


class BanRecord(msgspec.Struct, kw_only=True):
    """One ban. `key` is a normalized address or an IPv6 prefix; expires None = permanent."""

    key: str
    rule: str
    reason: str
    created: float
    expires: float | None
    source: str = "rule"
    decision_id: str = ""
    user: str = ""
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)
    family: int = 0  # 4 or 6; filled in from `key` by add_bans

    @property
    def permanent(self) -> bool:
        return self.expires is None

    def active(self, now: float) -> bool:
        return self.expires is None or self.expires > now


class WhitelistRecord(msgspec.Struct, kw_only=True):
    ip: str
    added: float
    expires: float | None  # None = permanent
    user_id: str = ""
    domain: str = ""
    last_seen: float = 0.0
    source: str = "learned"

    @property
    def permanent(self) -> bool:
        return self.expires is None

    def active(self, now: float) -> bool:
        return self.expires is None or self.expires > now


class OutboxItem(msgspec.Struct, kw_only=True):
    id: int
    ban_key: str
    payload: str  # JSON text, sent as is
    attempts: int
    next_attempt: float
    created: float
    last_error: str


def default_path(state_dir: str) -> str:
    """The state file inside `config.paths.state_dir`."""
    return os.path.join(state_dir, DB_FILENAME)


def normalize_key(text: str) -> tuple[str, int]:
    """(canonical key, family) of an address or prefix. Raises ValueError.

    IPv4-mapped IPv6 is unmapped; a full-length prefix (/32, /128) becomes the address.
    """
    if not isinstance(text, str) or not text or len(text) > 49 or _CONTROL.search(text):
        raise ValueError(f"invalid IP address or prefix: {text!r}")
    if "/" not in text:
        try:
            addr = parse_ip(text)
        except ValueError:
            raise ValueError(f"invalid IP address: {text!r}") from None
        return str(addr), addr.version
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"invalid IP address or prefix: {text!r}") from exc
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address), net.version
    return str(net), net.version


def _fast_key(text: str) -> tuple[str, int]:
    """normalize_key, with a C fast path for canonical IPv4 (the bulk of add_bans)."""
    try:
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text, 4
    except (OSError, TypeError, ValueError):
        pass
    return normalize_key(text)


# --------------------------------------------------------------------------
# Schema: ordered migrations. Never edit a released step; append a new one.
# --------------------------------------------------------------------------

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE bans (
                key TEXT PRIMARY KEY, family INTEGER NOT NULL, rule TEXT NOT NULL,
                reason TEXT NOT NULL, created REAL NOT NULL, expires REAL,
                source TEXT NOT NULL CHECK (source IN ('rule','manual','upstream')),
                decision_id TEXT NOT NULL, user TEXT NOT NULL, evidence TEXT NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE whitelist (
                ip TEXT PRIMARY KEY, user_id TEXT NOT NULL, domain TEXT NOT NULL,
                added REAL NOT NULL, expires REAL, last_seen REAL NOT NULL,
                permanent INTEGER GENERATED ALWAYS AS (expires IS NULL) VIRTUAL,
                source TEXT NOT NULL CHECK (source IN ('learned','manual'))
            )""",
            """CREATE TABLE untrusted_patterns (
                pattern TEXT PRIMARY KEY, added REAL NOT NULL,
                source TEXT NOT NULL CHECK (source IN ('config','runtime'))
            )""",
            "CREATE TABLE recidive (key TEXT NOT NULL, banned_at REAL NOT NULL)",
            """CREATE TABLE outbox (
                id INTEGER PRIMARY KEY, ban_key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
                created REAL NOT NULL, last_error TEXT NOT NULL DEFAULT ''
            )""",
            """CREATE TABLE processed_decisions (
                decision_id TEXT PRIMARY KEY, at REAL NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    (
        2,  # indexes for the incremental expiry and pruning paths
        (
            "CREATE INDEX bans_expires ON bans (expires) WHERE expires IS NOT NULL",
            "CREATE INDEX recidive_key_at ON recidive (key, banned_at)",
            "CREATE INDEX recidive_at ON recidive (banned_at)",
            "CREATE INDEX outbox_due ON outbox (next_attempt)",
            "CREATE INDEX processed_at ON processed_decisions (at)",
            "CREATE INDEX whitelist_expires ON whitelist (expires) WHERE expires IS NOT NULL",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_BAN_COLS = "key, family, rule, reason, created, expires, source, decision_id, user, evidence"
_WL_COLS = "ip, user_id, domain, added, expires, last_seen, source"
_OUTBOX_COLS = "id, ban_key, payload, attempts, next_attempt, created, last_error"
_evidence_list_decoder = msgspec.json.Decoder(list[dict[str, Any]])


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def _ban_row(r: BanRecord) -> tuple[Any, ...]:
    evidence = msgspec.json.encode(r.evidence).decode() if r.evidence else "{}"
    return (
        r.key, r.family, r.rule, r.reason, r.created, r.expires,
        r.source, r.decision_id, r.user, evidence,
    )  # fmt: skip


def _bans_from_rows(rows: Sequence[tuple[Any, ...]]) -> list[BanRecord]:
    """Rows → records; all evidence JSON is decoded in one call (start-up loads 100k+)."""
    evidence = _evidence_list_decoder.decode("[" + ",".join(r[9] for r in rows) + "]")
    return [
        BanRecord(
            key=key,
            family=family,
            rule=rule,
            reason=reason,
            created=created,
            expires=expires,
            source=source,
            decision_id=decision_id,
            user=user,
            evidence=ev,
        )
        for (key, family, rule, reason, created, expires, source, decision_id, user, _), ev in zip(
            rows, evidence, strict=True
        )
    ]


def _wl_from_row(row: tuple[Any, ...]) -> WhitelistRecord:
    ip, user_id, domain, added, expires, last_seen, source = row
    return WhitelistRecord(
        ip=ip,
        user_id=user_id,
        domain=domain,
        added=added,
        expires=expires,
        last_seen=last_seen,
        source=source,
    )


class Store:
    """SQLite state owned by one process; every method is thread-safe (one lock)."""

    def __init__(
        self,
        path: str,
        *,
        outbox_max_pending: int = 10_000,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        max_attempts: int = 50,
    ) -> None:
        self.path = os.path.abspath(path)
        self.outbox_max_pending = outbox_max_pending
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_attempts = max_attempts  # 0 = retry forever
        self._lock = threading.RLock()
        # Called inside the transaction that inserts new bans / removes one (the CrowdSec
        # outbox commits with its ban, see fsguard_firewall/fleet.py).
        self.on_bans_added: list[Callable[[sqlite3.Connection, list[BanRecord]], None]] = []
        self.on_ban_removed: list[Callable[[sqlite3.Connection, str], None]] = []
        self._lock_fd = self._take_owner_lock()
        try:
            self._db = self._connect()
            self.schema_version = self._migrate()
        except BaseException:
            if getattr(self, "_db", None) is not None:
                self._db.close()
            os.close(self._lock_fd)
            raise
        self._closed = False

    # --- open -----------------------------------------------------------------

    def _take_owner_lock(self) -> int:
        directory = os.path.dirname(self.path)
        try:
            os.stat(directory)
        except FileNotFoundError:
            raise StoreError(f"state directory {directory} does not exist") from None
        except OSError as exc:
            raise StoreError(f"state directory {directory}: {exc.strerror}") from None
        if not os.path.isdir(directory):
            raise StoreError(f"state directory {directory} is not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StoreError(f"state directory {directory} is not writable")
        if os.path.exists(self.path) and not os.access(self.path, os.R_OK | os.W_OK):
            raise StoreError(f"state file {self.path} is not readable and writable")
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"state file {self.path} is in use by another process") from exc
        return fd

    def _connect(self) -> sqlite3.Connection:
        try:
            # Create it private first: it holds SIP user names. -wal/-shm inherit the mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot open state file {self.path}: {exc.strerror}") from exc
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state file {self.path}: {exc}") from exc
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                detail = "; ".join(str(r[0]) for r in rows[:3])
                raise StoreError(
                    f"state file {self.path} is corrupted (quick_check: {detail}); "
                    "restore a backup or move it away"
                )
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"state file {self.path}: cannot enable WAL (mode {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            db.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StoreError(
                    f"state file {self.path} is corrupted ({exc}); restore a backup or move it away"
                ) from exc
            raise StoreError(f"cannot open state file {self.path}: {exc}") from exc
        except StoreError:
            db.close()
            raise
        return db

    def _migrate(self) -> int:
        with self._tx("migrate"):
            tables = {
                r[0]
                for r in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                )
            }
            if "schema_version" in tables:
                row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
                version = int(row[0] or 0)
            elif tables:
                raise StoreError(
                    f"state file {self.path} is not an fsguard state file "
                    f"(tables: {', '.join(sorted(tables))})"
                )
            else:
                self._db.execute(
                    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied REAL)"
                )
                version = 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"state file {self.path} has schema version {version}, newer than this "
                    f"fsguard knows ({SCHEMA_VERSION}); run a newer fsguard"
                )
            now = datetime.now(UTC).timestamp()
            for step, statements in MIGRATIONS:
                if step > version:
                    for sql in statements:
                        self._db.execute(sql)
                    self._db.execute("INSERT INTO schema_version VALUES (?, ?)", (step, now))
                    version = step
        return version

    @contextmanager
    def _tx(self, op: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the lock; SQLite errors become StoreError."""
        with self._lock:
            if getattr(self, "_closed", False):
                raise StoreError(f"{op}: store is closed")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{op}: {self.path}: {exc}") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{op}: {self.path}: {exc}") from exc
                raise

    @contextmanager
    def _read(self, op: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError(f"{op}: store is closed")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreError(f"{op}: {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.close()
            finally:
                os.close(self._lock_fd)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        except _Refused as refused:
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
            key, family = _fast_key(rec.key)
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
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                for key, created, expires in db.execute(
                    f"SELECT key, created, expires FROM bans WHERE key IN ({marks})", chunk
                ):
                    current[key] = (created, expires)
            seen: set[str] = set()
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                seen.update(
                    r[0]
                    for r in db.execute(
                        "SELECT decision_id FROM processed_decisions "
                        f"WHERE decision_id IN ({marks})",
                        chunk,
                    )
                )
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
            db.executemany(
                f"INSERT OR REPLACE INTO bans ({_BAN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [_ban_row(r) for r in changed.values()],
            )
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
                    raise _Refused(refused)
            if new_keys and self.on_bans_added:
                inserted = [changed[k] for k in dict.fromkeys(k for k, _ in new_keys)]
                for hook in self.on_bans_added:
                    hook(db, inserted)
        return list(changed.values()), queued

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
            row = db.execute(f"SELECT {_BAN_COLS} FROM bans WHERE key = ?", (key,)).fetchone()
        return None if row is None else _bans_from_rows([row])[0]

    def active_bans(self, now: float) -> list[BanRecord]:
        with self._read("active_bans") as db:
            rows = db.execute(
                f"SELECT {_BAN_COLS} FROM bans WHERE expires IS NULL OR expires > ?", (now,)
            ).fetchall()
        return _bans_from_rows(rows)

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
            for chunk in _chunks(list(dict.fromkeys(keys))):
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

    # --- whitelist ----------------------------------------------------------------

    def whitelist_add(self, rec: WhitelistRecord) -> None:
        """Insert or replace the entry for `rec.ip` (a normalized address or network)."""
        ip = normalize_key(rec.ip)[0]
        if ip != rec.ip:
            raise ValueError(f"whitelist ip {rec.ip!r} is not normalized (expected {ip!r})")
        if rec.source not in WHITELIST_SOURCES:
            raise ValueError(f"whitelist {ip}: unknown source {rec.source!r}")
        with self._tx("whitelist_add") as db:
            db.execute(
                f"INSERT OR REPLACE INTO whitelist ({_WL_COLS}) VALUES (?,?,?,?,?,?,?)",
                (
                    rec.ip, rec.user_id, rec.domain, rec.added, rec.expires,
                    rec.last_seen or rec.added, rec.source,
                ),
            )  # fmt: skip

    def whitelist_remove(self, ip: str) -> bool:
        with self._tx("whitelist_remove") as db:
            return db.execute("DELETE FROM whitelist WHERE ip = ?", (ip,)).rowcount > 0

    def whitelist_get(self, ip: str, now: float) -> WhitelistRecord | None:
        """The entry if it is active at `now` (expired ones are hidden, as in Go)."""
        with self._read("whitelist_get") as db:
            row = db.execute(
                f"SELECT {_WL_COLS} FROM whitelist WHERE ip = ? "
                "AND (expires IS NULL OR expires > ?)",
                (ip, now),
            ).fetchone()
        return None if row is None else _wl_from_row(row)

    def whitelist_active(self, now: float) -> list[WhitelistRecord]:
        with self._read("whitelist_active") as db:
            rows = db.execute(
                f"SELECT {_WL_COLS} FROM whitelist WHERE expires IS NULL OR expires > ?", (now,)
            ).fetchall()
        return [_wl_from_row(r) for r in rows]

    # --- untrusted patterns ---------------------------------------------------------

    def pattern_add(self, pattern: str, now: float, source: str = "runtime") -> bool:
        """False when the pattern already exists."""
        if not pattern.strip() or _CONTROL.search(pattern):
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
                f"SELECT {_OUTBOX_COLS} FROM outbox WHERE next_attempt <= ? "
                "ORDER BY next_attempt, id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [
            OutboxItem(
                id=r[0],
                ban_key=r[1],
                payload=r[2],
                attempts=r[3],
                next_attempt=r[4],
                created=r[5],
                last_error=r[6],
            )
            for r in rows
        ]

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

    # --- export / import -----------------------------------------------------------------

    def export_json(self) -> dict[str, Any]:
        """Bans, whitelist and runtime patterns in the Go entry shapes (camelCase, RFC 3339)
        plus fsguard's own fields. Expired rows not yet purged are included; import skips
        them."""
        with self._read("export") as db:
            bans = _bans_from_rows(db.execute(f"SELECT {_BAN_COLS} FROM bans").fetchall())
            wl = [_wl_from_row(r) for r in db.execute(f"SELECT {_WL_COLS} FROM whitelist")]
            pats = [
                r[0]
                for r in db.execute(
                    "SELECT pattern FROM untrusted_patterns WHERE source = 'runtime' "
                    "ORDER BY pattern"
                )
            ]
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "blacklist": {
                b.key: {
                    "ip": b.key,
                    "addedAt": _rfc3339(b.created),
                    "expiresAt": None if b.expires is None else _rfc3339(b.expires),
                    "reason": b.reason,
                    "failCount": _fail_count(b.evidence),
                    "permanent": b.expires is None,
                    "rule": b.rule,
                    "source": b.source,
                    "decisionId": b.decision_id,
                    "user": b.user,
                    "evidence": b.evidence,
                }
                for b in bans
            },
            "whitelist": {
                w.ip: {
                    "ip": w.ip,
                    "addedAt": _rfc3339(w.added),
                    "expiresAt": None if w.expires is None else _rfc3339(w.expires),
                    "lastSeen": _rfc3339(w.last_seen),
                    "userId": w.user_id,
                    "domain": w.domain,
                    "permanent": w.expires is None,
                    "source": w.source,
                }
                for w in wl
            },
            "untrustedPatterns": pats,
        }

    def import_json(self, data: Any, now: float) -> int:
        """Merge an export into the store: all or nothing, in one transaction.

        Every entry is validated before anything is written (ImportDataError names the
        first bad one). Entries already expired at `now` are skipped. Imported entries
        replace existing ones with the same key. Returns how many entries were written.
        """
        bans, wl, pats = _parse_import(data, now)
        with self._tx("import") as db:
            db.executemany(
                f"INSERT OR REPLACE INTO bans ({_BAN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [_ban_row(b) for b in bans],
            )
            db.executemany(
                f"INSERT OR REPLACE INTO whitelist ({_WL_COLS}) VALUES (?,?,?,?,?,?,?)",
                [
                    (w.ip, w.user_id, w.domain, w.added, w.expires, w.last_seen, w.source)
                    for w in wl
                ],
            )
            db.executemany(
                "INSERT OR IGNORE INTO untrusted_patterns VALUES (?, ?, 'runtime')",
                [(p, now) for p in pats],
            )
        return len(bans) + len(wl) + len(pats)


# --------------------------------------------------------------------------
# Import validation
# --------------------------------------------------------------------------

_RFC3339_FRACTION = re.compile(r"(\.\d{6})\d+")


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _fail_count(evidence: dict[str, Any]) -> int:
    """Go's failCount: the evidence "count" when the caller stored one."""
    count = evidence.get("count", 0)
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def _bad(where: str, what: str) -> ImportDataError:
    return ImportDataError(f"import refused, nothing written: {where}: {what}")


def _time(value: Any, where: str) -> float:
    """RFC 3339 text (Go's, with up to nanoseconds) or epoch seconds."""
    if isinstance(value, bool):
        raise _bad(where, f"invalid time {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            text = _RFC3339_FRACTION.sub(r"\1", value.replace("z", "Z"))
            ts = datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise _bad(where, f"invalid time {value!r}") from None
    else:
        raise _bad(where, f"invalid time {value!r}")
    if not math.isfinite(ts) or ts < 0:
        raise _bad(where, f"invalid time {value!r}")
    return ts


def _text(entry: dict[str, Any], name: str, where: str, default: str = "") -> str:
    value = entry.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise _bad(f"{where}.{name}", f"expected a string of at most {_MAX_TEXT} characters")
    return value


def _expiry(entry: dict[str, Any], where: str) -> float | None:
    permanent = entry.get("permanent", False)
    if not isinstance(permanent, bool):
        raise _bad(f"{where}.permanent", "expected true or false")
    if permanent:
        return None
    if entry.get("expiresAt") is None:
        raise _bad(f"{where}.expiresAt", "required unless permanent is true")
    return _time(entry["expiresAt"], f"{where}.expiresAt")


def _entries(data: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    section = data.get(name, {})
    if isinstance(section, dict):
        items = list(section.items())
    elif isinstance(section, list):
        items = [(str(i), e) for i, e in enumerate(section)]
    else:
        raise _bad(name, "expected an object keyed by IP or a list")
    for label, entry in items:
        if not isinstance(entry, dict):
            raise _bad(f"{name}[{label!r}]", "expected an object")
    return items


def _parse_import(
    data: Any, now: float
) -> tuple[list[BanRecord], list[WhitelistRecord], list[str]]:
    if not isinstance(data, dict):
        raise _bad("top level", "expected a JSON object")
    if data.get("format", EXPORT_FORMAT) != EXPORT_FORMAT:
        raise _bad("format", f"expected {EXPORT_FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != EXPORT_VERSION:
        raise _bad("version", f"unsupported version {data.get('version')!r} (known: 1)")
    unknown = set(data) - {"format", "version", "blacklist", "whitelist", "untrustedPatterns"}
    if unknown:
        raise _bad("top level", f"unknown keys {sorted(unknown)}")
    bans: dict[str, BanRecord] = {}
    for label, e in _entries(data, "blacklist"):
        where = f"blacklist[{label!r}]"
        try:
            key, family = normalize_key(e.get("ip", label))
        except ValueError as exc:
            raise _bad(where, str(exc)) from None
        source = _text(e, "source", where, "manual")
        if source not in BAN_SOURCES:
            raise _bad(f"{where}.source", f"expected one of {', '.join(BAN_SOURCES)}")
        evidence = e.get("evidence", {})
        if not isinstance(evidence, dict):
            raise _bad(f"{where}.evidence", "expected an object")
        expires = _expiry(e, where)
        if expires is not None and expires <= now:
            continue
        bans[key] = BanRecord(
            key=key,
            family=family,
            rule=_text(e, "rule", where, "import"),
            reason=_text(e, "reason", where),
            created=_time(e.get("addedAt", now), f"{where}.addedAt"),
            expires=expires,
            source=source,
            decision_id=_text(e, "decisionId", where),
            user=_text(e, "user", where),
            evidence=evidence,
        )
    wl: dict[str, WhitelistRecord] = {}
    for label, e in _entries(data, "whitelist"):
        where = f"whitelist[{label!r}]"
        raw_ip = e.get("ip", label)
        try:
            if not isinstance(raw_ip, str):
                raise ValueError
            ip = normalize_key(raw_ip)[0]  # an address or a network
        except ValueError:
            raise _bad(where, f"invalid IP address: {raw_ip!r}") from None
        source = _text(e, "source", where, "manual")
        if source not in WHITELIST_SOURCES:
            raise _bad(f"{where}.source", f"expected one of {', '.join(WHITELIST_SOURCES)}")
        expires = _expiry(e, where)
        if expires is not None and expires <= now:
            continue
        added = _time(e.get("addedAt", now), f"{where}.addedAt")
        wl[ip] = WhitelistRecord(
            ip=ip,
            user_id=_text(e, "userId", where),
            domain=_text(e, "domain", where),
            added=added,
            expires=expires,
            last_seen=_time(e.get("lastSeen", added), f"{where}.lastSeen"),
            source=source,
        )
    pats = data.get("untrustedPatterns", [])
    if not isinstance(pats, list):
        raise _bad("untrustedPatterns", "expected a list of strings")
    for i, p in enumerate(pats):
        if not isinstance(p, str) or not p.strip() or len(p) > _MAX_TEXT or _CONTROL.search(p):
            raise _bad(f"untrustedPatterns[{i}]", f"invalid pattern {p!r}")
    return list(bans.values()), list(wl.values()), list(dict.fromkeys(pats))
