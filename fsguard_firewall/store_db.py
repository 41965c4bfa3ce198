"""The state store's file: owner lock, SQLite connection checks, migrations and the
transaction helpers every table module uses (see fsguard_firewall/store.py).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Self

from .store_records import BanRecord, StoreError
from .store_schema import MIGRATIONS, SCHEMA_VERSION


class StoreDb:
    """One SQLite file owned by one process; one lock serialises every access."""

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
