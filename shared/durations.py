"""Durations as text: Go's `time.ParseDuration` and `time.Duration.String()`, and the
compact form configs use.

`parse_go_duration` is the one parser of duration text: the CrowdSec LAPI's as they come
("59m59.77s", "-1.5s"), and, with `days=True`, the configuration's
(shared.config_values.parse_duration adds plain seconds and errors naming the key).

One decomposition (`_split`: sign, hours, minutes, whole seconds, nanoseconds) serves both
formatters:
- `go_duration` is what the Go program printed in its API and ban reasons ("1m0s",
  "1h0m0s", "1.5s", "250ms"), kept byte for byte for compatible clients;
- `format_duration` is the shortest text `shared.config.parse_duration` reads back
  ("1m", "1h", "1m30s500ms"), for the configuration (effective config, docs, errors).
"""

from __future__ import annotations

import math
import re

_NS = 1_000_000_000
_SUBSECOND = (("ms", 1_000_000), ("us", 1_000), ("ns", 1))

# Go's units (both micro signs), longest first so "ms" is not read as "m"; "d" only in configs.
_UNITS: dict[str, float] = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
    "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip
_DAY = 86400.0
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"


def _grammar(units: list[str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    alt = "|".join(sorted(units, key=len, reverse=True))
    part = re.compile(rf"{_NUM}({alt})")
    full = re.compile(rf"[-+]?(?:{_NUM}(?:{alt}))+|[-+]?0")
    return part, full


_GO = _grammar(list(_UNITS))
_GO_DAYS = _grammar([*_UNITS, "d"])


def parse_go_duration(text: str, *, days: bool = False) -> float:
    """Seconds of a Go duration such as "59m59.77s", "4h", "-1.5s" or "0" (with `days`,
    "7d" too). ValueError for anything else, or for one too large to be finite."""
    part, full = _GO_DAYS if days else _GO
    if not isinstance(text, str) or not full.fullmatch(text):
        raise ValueError(f"invalid duration {text!r}")
    sign = -1.0 if text.startswith("-") else 1.0
    seconds = sum(float(n) * (_DAY if u == "d" else _UNITS[u]) for n, u in part.findall(text))
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}")
    return sign * seconds


def _split(seconds: float) -> tuple[str, int, int, int, int]:
    """(sign, hours, minutes, seconds, nanoseconds) of `seconds`, rounded to the ns."""
    ns = round(seconds * 1e9)
    sign = "-" if ns < 0 else ""
    hours, rest = divmod(abs(ns), 3600 * _NS)
    minutes, rest = divmod(rest, 60 * _NS)
    secs, nanos = divmod(rest, _NS)
    return sign, hours, minutes, secs, nanos


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String(): 60 -> "1m0s", 3600 -> "1h0m0s"."""
    sign, hours, minutes, secs, nanos = _split(seconds)
    if not (hours or minutes or secs):
        if not nanos:
            return "0s"
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return sign + _frac(nanos, size) + unit
    text = _frac(secs * _NS + nanos, _NS) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def format_duration(seconds: float) -> str:
    """Compact duration that parse_duration reads back: 300 → "5m", 5400 → "1h30m"."""
    sign, hours, minutes, secs, nanos = _split(seconds)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    if nanos:
        unit, size = next((u, s) for u, s in _SUBSECOND if nanos % s == 0)
        parts.append(f"{nanos // size}{unit}")
    return sign + "".join(parts) if parts else "0s"


def _frac(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
