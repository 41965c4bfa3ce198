"""The audit stream: who changed what, separate from the operational log.

Every manual list change, every ESL command and every ban/unban is one record, written
twice by the process that performed it:

- one JSON line appended to `logging.audit_file` (default `<paths.state_dir>/audit.log`);
  each line is a single `write()` on an O_APPEND descriptor, so several processes can
  share the file without interleaving;
- one row of the `audit` table of `<paths.state_dir>/audit.db` (SQLite, WAL, a busy
  timeout so the firewall, the supervisor and the API can all write to it).

`record()` only builds the record and queues it (bounded, drops counted): a writer thread
does the disk work (shared/audit_writer.py, which also applies the retention settings
`logging.audit_max_bytes` and `logging.audit_max_age`), so an event loop never waits on
SQLite's busy timeout or a slow disk.

Record fields: ts (unix seconds), time (RFC 3339), role, pid, action, actor (who or which
rule did it), target (address, command, request line), outcome, details (a JSON object).
Every string (keys and values, nested too) goes through `shared.logs.escape`, so
attacker-controlled text (user agents, commands) can never carry CR/LF/NUL or terminal
controls into the file or into a later `sqlite3` dump.

The files are opened (by the writer thread) at the first record: a process that never
audits creates nothing. Auditing never stops the process: a state dir that cannot be
written (e.g. the API unit, whose state dir is read-only) turns the sink off with one
error line.

The API logs its audit lines through `logging.getLogger("fsguard.audit")`;
`install_handler` attaches an `AuditHandler` so those records reach an AuditLog as well.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from shared.audit_writer import AuditWriter, Row
from shared.config import Config
from shared.logs import LogRateLimiter, escape

log = logging.getLogger("fsguard.auditlog")  # never "fsguard.audit": no loop via the handler

AUDIT_LOGGER = "fsguard.audit"
DB_NAME = "audit.db"
LOG_NAME = "audit.log"
MAX_TEXT = 1100  # longer than any allowed ESL command (1024 bytes)
MAX_DEPTH = 4
QUEUE_MAX = 10_000  # queue items (a record, or one firewall batch of records)
_drop_limiter = LogRateLimiter(10.0)

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
    """One process's producer of the audit stream. Thread-safe; `record()` never blocks.

    Records go to a bounded queue drained by an `AuditWriter` thread (started at the first
    record); a full queue drops the record and counts it in `dropped`.
    """

    def __init__(
        self,
        config: Config | None,
        role: str,
        *,
        enabled: bool = True,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        self.role = role
        self.pid = os.getpid()
        self._lock = threading.RLock()
        self._depth = 0
        self._batch: list[tuple[Row, bytes]] = []
        self.records = 0
        self.errors = 0
        self.dropped = 0
        self.log_path = ""
        self.db_path = ""
        self.max_bytes = 0
        self.max_age = 0.0
        self.queue_max = queue_max
        self._writer: AuditWriter | None = None
        self._disabled = config is None or not enabled
        if config is not None:
            self.log_path, self.db_path = audit_paths(config)
            self.max_bytes = config.logging.audit_max_bytes
            self.max_age = config.logging.audit_max_age

    @classmethod
    def null(cls, role: str = "none") -> AuditLog:
        """An AuditLog that records nothing (unit tests, tools)."""
        return cls(None, role, enabled=False)

    @property
    def enabled(self) -> bool:
        return not self._disabled

    def disable(self) -> None:
        """The writer could not open the files: drop every later record."""
        self._disabled = True

    def failed(self, exc: Exception) -> None:
        """A write error in the writer thread (counted, logged now and then)."""
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.error("audit write failed (%d so far): %s", self.errors, exc)

    def record(
        self,
        action: str,
        *,
        actor: str,
        target: str = "",
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one record for both sinks. Never raises, never waits on disk."""
        if self._disabled:
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
            if self._depth:  # inside batch(): one queue item, one write(), one transaction
                self._batch.append((row, line))
                return
        self._put([(row, line)])

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the records of one firewall batch: one transaction, one write()."""
        with self._lock:
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                items, self._batch = (self._batch, []) if self._depth == 0 else ([], self._batch)
            if items:
                self._put(items)

    def _put(self, items: list[tuple[Row, bytes]]) -> None:
        writer = self._writer or self._start()
        if writer is None:
            return
        try:
            writer.queue.put_nowait(items)
        except queue.Full:
            with self._lock:
                self.dropped += len(items)
                dropped = self.dropped
            if _drop_limiter.allow(f"audit dropped {self.role}"):
                log.error("audit queue full (%d records): %d records dropped so far",
                          self.queue_max, dropped)

    def _start(self) -> AuditWriter | None:
        with self._lock:
            if self._writer is None and not self._disabled:
                writer = AuditWriter(self, self.log_path, self.db_path, self.max_bytes,
                                     self.max_age, self.queue_max)  # fmt: skip
                try:
                    writer.start()
                except RuntimeError as exc:  # no thread left: never raise into the caller
                    log.error("audit stream disabled for %s: %s", self.role, exc)
                    self._disabled = True
                    return None
                self._writer = writer
                atexit.register(self.close)
            return self._writer

    @property
    def pending(self) -> int:
        """Queue items not yet taken by the writer."""
        return self._writer.queue.qsize() if self._writer is not None else 0

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every record queued so far is written (tests, shutdown)."""
        writer = self._writer
        if writer is None or not writer.is_alive():
            return True
        done = threading.Event()
        try:
            writer.queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, close the files, stop the thread. Idempotent."""
        with self._lock:
            items, self._batch = self._batch, []
            writer, self._writer = self._writer, None
            self._disabled = True
        if writer is None:
            return
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)
        if items:
            with contextlib.suppress(queue.Full):
                writer.queue.put(items, timeout=timeout)
        with contextlib.suppress(queue.Full):
            writer.queue.put(None, timeout=timeout)
        writer.join(timeout)


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
