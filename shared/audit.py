"""The audit stream: who changed what, separate from the operational log.

Every manual list change, every ESL command and every ban/unban is one record, written
twice by the process that performed it:

- one JSON line appended to `logging.audit_file` (default `<paths.state_dir>/audit.log`);
  each line is a single `write()` on an O_APPEND descriptor, so several processes can
  share the file without interleaving;
- one row of the `audit` table of `<paths.state_dir>/audit.db` (SQLite, WAL, a busy
  timeout so the firewall, the supervisor and the API can all write to it).

Record fields: ts (unix seconds), time (RFC 3339), role, pid, action, actor (who or which
rule did it), target (address, command, request line), outcome, details (a JSON object).
Every string (keys and values, nested too) goes through `shared.logs.escape`, so
attacker-controlled text (user agents, commands) can never carry CR/LF/NUL or terminal
controls into the file or into a later `sqlite3` dump.

The files are opened at the first record (a process that never audits creates nothing).
Auditing never stops the process: a state dir that cannot be written (e.g. the API unit,
whose state dir is read-only) turns the sink off with one error line.

The API logs its audit lines through `logging.getLogger("fsguard.audit")`;
`install_handler` attaches an `AuditHandler` so those records reach an AuditLog as well.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from shared.config import Config
from shared.logs import escape

log = logging.getLogger("fsguard.auditlog")  # never "fsguard.audit": no loop via the handler

AUDIT_LOGGER = "fsguard.audit"
DB_NAME = "audit.db"
LOG_NAME = "audit.log"
MAX_TEXT = 1100  # longer than any allowed ESL command (1024 bytes)
MAX_DEPTH = 4

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
_encode = msgspec.json.Encoder().encode


def audit_paths(config: Config) -> tuple[str, str]:
    """(JSON-lines file, SQLite file) for a config."""
    state = config.paths.state_dir
    return config.logging.audit_file or os.path.join(state, LOG_NAME), os.path.join(state, DB_NAME)


_KEYS: dict[str, str] = {}  # escaped detail keys: a handful of names written by our own code


def _key(k: Any) -> str:
    text = str(k)
    cached = _KEYS.get(text)
    if cached is None:
        cached = escape(text, 128)
        if len(_KEYS) < 1024:
            _KEYS[text] = cached
    return cached


def clean(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy with every string escaped (attacker text is data)."""
    if isinstance(value, str | bytes):
        return escape(value, MAX_TEXT)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_DEPTH:
        return escape(str(value), MAX_TEXT)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _KEYS.get(k) if k.__class__ is str else None
            if key is None:
                key = _key(k)
            cls = v.__class__
            if cls is str:  # escape()'s own fast path, inlined: this runs per ban
                out[key] = (
                    v if len(v) <= MAX_TEXT and v.isprintable() and "\\" not in v
                    else escape(v, MAX_TEXT)
                )
            elif cls is int or cls is float or cls is bool or v is None:
                out[key] = v
            else:
                out[key] = clean(v, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [clean(v, depth + 1) for v in value]
    return escape(str(value), MAX_TEXT)


_second: tuple[int, str] = (-1, "")


def _rfc3339(ts: float) -> str:
    """RFC 3339 UTC with milliseconds; the date part is formatted once per second."""
    global _second
    sec = int(ts)
    if _second[0] != sec:
        _second = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((ts - sec) * 1000):03d}Z"


class AuditLog:
    """One process's writer of the audit stream. Thread-safe; cheap enough per record."""

    def __init__(self, config: Config | None, role: str, *, enabled: bool = True) -> None:
        self.role = role
        self.pid = os.getpid()
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._depth = 0
        self._lines: list[bytes] = []
        self._rows: list[tuple[Any, ...]] = []
        self.records = 0
        self.errors = 0
        self.log_path = ""
        self.db_path = ""
        self._pending_open = config is not None and enabled
        if config is not None:
            self.log_path, self.db_path = audit_paths(config)

    @classmethod
    def null(cls, role: str = "none") -> AuditLog:
        """An AuditLog that records nothing (unit tests, tools)."""
        return cls(None, role, enabled=False)

    @property
    def enabled(self) -> bool:
        return self._pending_open or self._fd is not None

    def _ensure_open(self) -> bool:
        with self._lock:
            if self._pending_open:
                self._pending_open = False
                try:
                    self._open()
                except (OSError, sqlite3.Error) as exc:
                    log.error("audit stream disabled for %s: %s", self.role, exc)
                    self.close()
            return self._fd is not None

    def _open(self) -> None:
        for path in {os.path.dirname(self.log_path), os.path.dirname(self.db_path)}:
            if path:
                os.makedirs(path, mode=0o750, exist_ok=True)
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        db = sqlite3.connect(self.db_path, timeout=5.0, check_same_thread=False,
                             isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        with contextlib.suppress(OSError):
            os.chmod(self.db_path, 0o640)
        self._db = db

    def record(
        self,
        action: str,
        *,
        actor: str,
        target: str = "",
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one record (both sinks). Never raises."""
        if self._fd is None and not self._ensure_open():
            return
        ts = time.time()
        doc = {
            "ts": round(ts, 6),
            "time": _rfc3339(ts),
            "role": self.role,
            "pid": self.pid,
            "action": escape(action, 64),
            "actor": escape(actor, 256),
            "target": escape(target, MAX_TEXT),
            "outcome": escape(outcome, 512),
            "details": clean(dict(details or {})),
        }
        # Every string is already escaped (printable, no lone surrogates): msgspec's
        # encoder is safe here and several times faster than json.dumps.
        details_json = _encode(doc["details"]).decode()
        line = _encode(doc) + b"\n"
        row = (ts, doc["time"], self.role, self.pid, doc["action"], doc["actor"],
               doc["target"], doc["outcome"], details_json)
        with self._lock:
            self.records += 1
            if self._depth:  # inside batch(): one executemany and one write() at the end
                self._rows.append(row)
                self._lines.append(line)
                return
            try:
                if self._db is not None:
                    self._db.execute(_INSERT, row)
            except sqlite3.Error as exc:
                self._failed(exc)
            self._write(line)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the records of one firewall batch: one transaction, one write()."""
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._flush()

    def _flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            if self._db is not None:
                try:  # one transaction for the batch (the connection is in autocommit mode)
                    self._db.execute("BEGIN")
                    self._db.executemany(_INSERT, rows)
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    self._failed(exc)
        if self._lines:
            data, self._lines = b"".join(self._lines), []
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, data)
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.error("audit write failed (%d so far): %s", self.errors, exc)

    def close(self) -> None:
        with self._lock:
            self._pending_open = False
            self._flush()
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


# --- the API's logger -> AuditLog ----------------------------------------------------

# fsguard_api.access.audit: "time=%s source=%s identity=%s action=%s command=%r outcome=%s"
_API_FORMAT_PREFIX = "time=%s source=%s identity=%s action=%s"


class AuditHandler(logging.Handler):
    """Turns the records of the "fsguard.audit" logger into AuditLog records."""

    def __init__(self, audit: AuditLog) -> None:
        super().__init__(logging.INFO)
        self.audit = audit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            args = record.args
            if (
                isinstance(record.msg, str)
                and record.msg.startswith(_API_FORMAT_PREFIX)
                and isinstance(args, tuple)
                and len(args) == 6
            ):
                _, source, identity, action, subject, outcome = (str(a) for a in args)
                self.audit.record(
                    f"api.{action}",
                    actor=f"{identity}@{source}",
                    target=subject,
                    outcome=outcome,
                    details={"source": source, "identity": identity},
                )
            else:
                self.audit.record(
                    "api.log", actor="api", outcome="", details={"msg": record.getMessage()}
                )
        except Exception:  # pragma: no cover - a logging handler must never raise
            self.handleError(record)


def install_handler(audit: AuditLog, logger_name: str = AUDIT_LOGGER) -> AuditHandler:
    """Attach (replacing an earlier one) the handler feeding `audit` from `logger_name`."""
    logger = logging.getLogger(logger_name)
    for old in [h for h in logger.handlers if isinstance(h, AuditHandler)]:
        logger.removeHandler(old)
        old.audit.close()
    handler = AuditHandler(audit)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)  # audit records pass whatever the process log level
    return handler


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of an audit.log file (for tests and `fsguard` tooling)."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="ascii") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
    return out
