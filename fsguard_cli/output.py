"""Terminal output for the command line: plain tables, colours only on a TTY, a progress bar.

Stdlib only. Colours are used when the stream is a terminal, `NO_COLOR` is unset and
`TERM` is not "dumb"; `FORCE_COLOR` forces them (tests in a pseudo-terminal).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from typing import TextIO

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def use_colour(stream: TextIO) -> bool:
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """Wraps text in ANSI codes when enabled, returns it unchanged otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        return cls(use_colour(stream))

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


def visible_len(text: str) -> int:
    return len(_ANSI_RE.sub("", text))


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * max(0, width - visible_len(text))
    return gap + text if right else text + gap


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    right: Sequence[int] = (),
    style: Style | None = None,
    indent: str = "",
) -> str:
    """A plain-text table: header row, a rule, one line per row; columns `right` aligned right."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [visible_len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], visible_len(cell))
    st = style or Style(False)
    head = "  ".join(_pad(h, widths[i], i in right) for i, h in enumerate(headers))
    lines = [indent + st(head.rstrip(), "bold"), indent + "  ".join("-" * w for w in widths)]
    for row in cells:
        lines.append(
            indent + "  ".join(_pad(c, widths[i], i in right) for i, c in enumerate(row)).rstrip()
        )
    return "\n".join(lines)


def human_duration(seconds: float) -> str:
    """3600 -> "1h", 90 -> "1m30s", 0 -> "permanent"."""
    if seconds <= 0:
        return "permanent"
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"


class Progress:
    """A one-line progress bar on a TTY stream (stderr); does nothing elsewhere."""

    def __init__(self, total: int, stream: TextIO | None = None, *, label: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) and total > 0
        self.total = total
        self.label = label
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = min(1.0, done / self.total)
        width = 30
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label}[{bar}] {frac * 100:5.1f}% {done}/{self.total}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
