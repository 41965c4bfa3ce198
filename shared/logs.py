"""Logging for every fsguard process: JSON lines or a human format, on stderr.

Each line carries the process role and pid, so the interleaved output of the
supervisor, workers, firewall and api stays attributable. Attacker-controlled
text (SIP user names, user agents, domains) must go through `escape()` before
it reaches a message; `LogRateLimiter` turns per-event lines into one summary
per interval under attack.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS: dict[str, int] = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

# Attributes every LogRecord has; anything else came from `extra={...}`. uvicorn's
# `color_message` (the message again, with ANSI colours) is noise in both formats.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown log level {level!r}: expected one of {', '.join(LEVELS)}"
        ) from None


def _level_name(levelno: int) -> str:
    return "trace" if levelno <= TRACE else logging.getLevelName(levelno).lower()


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, role, pid, logger, msg, extra fields."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": _level_name(record.levelno),
            "role": self.role,
            "pid": record.process if record.process is not None else os.getpid(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, value)  # the standard fields win over a clashing extra
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        # ensure_ascii: lone surrogates and C1 controls can never reach the stream raw.
        return json.dumps(doc, ensure_ascii=True, default=str)


class HumanFormatter(logging.Formatter):
    """`2026-11-25T10:00:00Z INFO [firewall 1234] logger: msg k=v`."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pid = record.process if record.process is not None else os.getpid()
        line = (
            f"{ts} {_level_name(record.levelno).upper()} [{self.role} {pid}] "
            f"{record.name}: {record.getMessage()}"
        )
        for key, value in _extras(record).items():
            text = escape(value if isinstance(value, str | bytes) else str(value))
            if not text or any(ch in text for ch in ' "='):
                text = '"' + text.replace('"', '\\"') + '"'
            line += f" {key}={text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _FsguardHandler(logging.StreamHandler[TextIO]):
    """Marker class, so setup_logging replaces only its own handlers (not pytest's)."""


def setup_logging(
    role: str, fmt: str = "json", level: str = "info", stream: TextIO | None = None
) -> None:
    """Install the fsguard handler on the root logger; calling again replaces it.

    fmt "auto": the human format when the stream is a terminal, JSON lines otherwise
    (journald, files, pipes).
    """
    formatter: logging.Formatter
    out = sys.stderr if stream is None else stream
    if fmt == "auto":
        try:
            fmt = "human" if out.isatty() else "json"
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            fmt = "json"
    if fmt == "json":
        formatter = JsonFormatter(role)
    elif fmt == "human":
        formatter = HumanFormatter(role)
    else:
        raise ValueError(f"unknown log format {fmt!r}: expected auto, json or human")
    levelno = _level_number(level)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _FsguardHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _FsguardHandler(out)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(levelno)


def set_level(level: str) -> None:
    """Change the level of every logger at runtime (error/warning/info/debug/trace)."""
    logging.getLogger().setLevel(_level_number(level))


def get_level() -> str:
    """Current root level as a name (for the API's log-level endpoint)."""
    return _level_name(logging.getLogger().level)


# ---- escaping of attacker-controlled text ---------------------------------

_SHORT = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\\": "\\\\"}
# Cc controls, Cf format chars (bidi overrides, zero-width), Cs surrogates, line/para separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape_char(ch: str) -> str:
    short = _SHORT.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x80 and (code < 0x20 or code == 0x7F):
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original invalid byte
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(ch) in _ESCAPED_CATEGORIES:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch


def escape(value: str | bytes | None, max_len: int = 256) -> str:
    """Attacker text made safe for one log line: controls visible, at most max_len + "…".

    CR/LF/TAB → \\r \\n \\t, other ASCII controls and DEL → \\xNN, invalid UTF-8
    bytes → \\xNN, C1/format/separator chars and lone surrogates → \\uNNNN,
    backslash doubled. Only the first ~max_len characters of input are examined.
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value[: max_len * 4 + 4].decode("utf-8", errors="surrogateescape")
    if len(value) <= max_len and value.isprintable() and "\\" not in value:
        return value
    out: list[str] = []
    size = 0
    for ch in value:
        piece = _escape_char(ch)
        if size + len(piece) > max_len:
            return "".join(out) + "…"
        out.append(piece)
        size += len(piece)
    return "".join(out)


# ---- rate limiting of repetitive lines ------------------------------------


class LogRateLimiter:
    """At most one line per key per interval; the rest are counted for a summary.

    Usage: `if limiter.allow("esl_drop"): log.warning(...)`, and periodically log
    `limiter.take_suppressed()`. Keys are message kinds, not attacker values; the
    number of tracked keys is capped so an attacker cannot grow it without bound.
    """

    OVERFLOW_KEY = "<overflow>"

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._opened: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """True for the first occurrence of key in its interval, else False (counted)."""
        now = self._clock()
        with self._lock:
            opened = self._opened.get(key)
            if opened is not None and now - opened < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            if opened is None and len(self._opened) >= self._max_keys:
                self._prune(now)
                if len(self._opened) >= self._max_keys:
                    overflow = self.OVERFLOW_KEY
                    self._suppressed[overflow] = self._suppressed.get(overflow, 0) + 1
                    return False
            self._opened[key] = now
            return True

    def take_suppressed(self) -> dict[str, int]:
        """Counts suppressed since the last call (then reset); empty when quiet."""
        with self._lock:
            taken, self._suppressed = self._suppressed, {}
            return taken

    def _prune(self, now: float) -> None:
        expired = [k for k, t in self._opened.items() if now - t >= self.interval]
        for key in expired:
            del self._opened[key]
