"""The audit stream's disk side: one writer thread per process, and retention.

`AuditLog.record()` (shared/audit.py) runs on event loops (the supervisor's ESL loop, the
API's) and must never wait on disk: it puts the finished record on a bounded queue and
returns. This thread takes records off the queue in batches and writes each batch as one
`write()` to `audit.log` and one SQLite transaction to `audit.db` (WAL, 5 s busy timeout:
the firewall, the supervisor and the API share it). A full queue drops the record and
counts it (`AuditLog.dropped`); nothing here ever raises into the recording process.

Retention (`logging.audit_max_bytes`, `logging.audit_max_age`; 0 = no limit):
- audit.db: rows older than max_age are deleted, and when the rows use more than
  max_bytes the oldest are deleted down to 80 % of it; a database created by this version
  uses incremental auto-vacuum, so the file shrinks back too. Checked at open and every
  `RETENTION_INTERVAL`.
- audit.log: rotated to `audit.log.1` (replacing the previous one) when it grows past
  max_bytes / 2, or when its first record is older than max_age / 2; `audit.log.1` is
  deleted once its newest record is older than max_age / 2. So the two files together stay
  under about max_bytes, and a record is kept between max_age / 2 and max_age. Several
  processes append to the same file: rotation happens under an flock on `audit.log.lock`,
  and every writer reopens the path when it was rotated under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Any

log = logging.getLogger("fsguard.auditlog")  # never "fsguard.audit": no loop via the handler

RETENTION_INTERVAL = 60.0
BATCH_MAX = 2000  # records per write() / transaction
LOCKED_RETRIES = 3  # busy timeouts (5 s each) before a batch's rows are given up on
PRUNE_TO = 0.8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      REAL    NOT NULL,
    time    TEXT    NOT NULL,
    role    TEXT    NOT NULL,
    pid     INTEGER NOT NULL,
    action  TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    details TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target);
"""
_INSERT = (
    "INSERT INTO audit (ts, time, role, pid, action, actor, target, outcome, details)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

Row = tuple[Any, ...]
Item = list[tuple[Row, bytes]] | threading.Event | None  # records | flush marker | stop


class AuditWriter(threading.Thread):
    """Drains the queue into the two files; owns every file descriptor of the stream."""

    def __init__(self, owner: Any, log_path: str, db_path: str, max_bytes: int,
                 max_age: float, maxsize: int) -> None:  # fmt: skip
        super().__init__(name=f"audit-{owner.role}", daemon=True)
        self.owner = owner  # the AuditLog: counters (errors) and the disabled flag
        self.log_path = log_path
        self.db_path = db_path
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.queue: queue.Queue[Item] = queue.Queue(maxsize)
        self._fd: int | None = None
        self._lock_fd: int | None = None  # flock: shared while appending, exclusive to rotate
        self._db: sqlite3.Connection | None = None
        self._next_retention = 0.0

    # --- the thread --------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._open()
        except (OSError, sqlite3.Error) as exc:
            log.error("audit stream disabled for %s: %s", self.owner.role, exc)
            self.owner.disable()
            self._close()
        while True:
            item = self.queue.get()
            batch: list[tuple[Row, bytes]] = []
            markers: list[threading.Event] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    batch.extend(item)
                if stop or len(batch) >= BATCH_MAX:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if batch and self._fd is not None:
                self._write(batch)
            if self._fd is not None and time.monotonic() >= self._next_retention:
                self._retention()
            for marker in markers:
                marker.set()
            if stop:
                self._close()
                return

    def _open(self) -> None:
        for path in {os.path.dirname(self.log_path), os.path.dirname(self.db_path)}:
            if path:
                os.makedirs(path, mode=0o750, exist_ok=True)
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._lock_fd = os.open(self.log_path + ".lock", os.O_WRONLY | os.O_CREAT, 0o640)
        db = sqlite3.connect(self.db_path, timeout=5.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes on a new database
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        with contextlib.suppress(OSError):
            os.chmod(self.db_path, 0o640)
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = None

    # --- writing -----------------------------------------------------------------------
    def _write(self, batch: list[tuple[Row, bytes]]) -> None:
        assert self._fd is not None and self._lock_fd is not None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # no rotation between check and write
            try:
                self._reopen_if_rotated()
                os.write(self._fd, b"".join(line for _, line in batch))
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except OSError as exc:
            self.owner.failed(exc)
        for attempt in range(LOCKED_RETRIES):
            try:
                self._insert([row for row, _ in batch])
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == LOCKED_RETRIES - 1:
                    self.owner.failed(exc)
                    break
            except sqlite3.Error as exc:
                self.owner.failed(exc)
                break
        if self.max_bytes:
            with contextlib.suppress(OSError):
                if os.fstat(self._fd).st_size > self.max_bytes // 2:
                    self._rotate_log()
            try:
                self._prune_db(by_age=False)  # one cheap PRAGMA unless over the limit
            except sqlite3.Error as exc:
                self.owner.failed(exc)

    def _insert(self, rows: list[Row]) -> None:
        db = self._db
        if db is None:
            return
        try:  # one transaction for the batch (the connection is in autocommit mode)
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_INSERT, rows)
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _reopen_if_rotated(self) -> None:
        """Another process rotated audit.log: append to the new file from now on."""
        assert self._fd is not None
        try:
            same = os.stat(self.log_path).st_ino == os.fstat(self._fd).st_ino
        except OSError:
            same = False
        if not same:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            os.close(self._fd)
            self._fd = fd

    # --- retention ---------------------------------------------------------------------
    def _retention(self) -> None:
        self._next_retention = time.monotonic() + RETENTION_INTERVAL
        try:
            self._prune_db()
        except sqlite3.Error as exc:
            self.owner.failed(exc)
        try:
            self._age_log()
        except OSError as exc:
            self.owner.failed(exc)

    def _prune_db(self, by_age: bool = True) -> None:
        db = self._db
        if db is None:
            return
        deleted = 0
        if self.max_age and by_age:
            deleted += db.execute("DELETE FROM audit WHERE ts < ?",
                                  (time.time() - self.max_age,)).rowcount  # fmt: skip
        if self.max_bytes:
            page_size, pages, free = (db.execute(f"PRAGMA {p}").fetchone()[0]
                                      for p in ("page_size", "page_count", "freelist_count"))
            used = (pages - free) * page_size  # rows and indexes, WAL included
            if used > self.max_bytes:
                (count,) = db.execute("SELECT count(*) FROM audit").fetchone()
                drop = int(count * (1 - PRUNE_TO * self.max_bytes / used)) + 1
                deleted += db.execute(
                    "DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY id LIMIT ?)",
                    (drop,)).rowcount  # fmt: skip
        if deleted:
            db.execute("PRAGMA incremental_vacuum")
            log.info("audit.db retention removed %d records", deleted)

    def _age_log(self) -> None:
        if not self.max_age:
            return
        horizon = time.time() - self.max_age / 2
        old = self.log_path + ".1"
        with contextlib.suppress(FileNotFoundError):
            if os.stat(old).st_mtime < horizon:
                os.unlink(old)
        first = _first_ts(self.log_path)
        if first is not None and first < horizon:
            self._rotate_log()

    def _rotate_log(self) -> None:
        """audit.log -> audit.log.1, once, even with several processes racing to do it."""
        assert self._fd is not None and self._lock_fd is not None
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.log_path).st_ino == os.fstat(self._fd).st_ino:
                    os.replace(self.log_path, self.log_path + ".1")
            self._reopen_if_rotated()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def _first_ts(path: str) -> float | None:
    """The ts of the first record of an audit.log file (None if empty or unreadable)."""
    try:
        with open(path, "rb") as fh:
            line = fh.readline(64 * 1024)
        return float(json.loads(line)["ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
