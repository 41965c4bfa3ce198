"""Sliding-window counters and the bounded per-key containers they live in.

A window is a plain sorted ``list[float]`` of event times (monotonic seconds),
trimmed on access and capped at the rule threshold: only the newest
``threshold`` times can ever decide a crossing, so nothing older is kept.
An event at time ``t`` is inside the window at ``now`` when ``t > now - window``
(a true sliding window, not the Go program's "no gap longer than" counter).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def trim(times: list[float], now: float, window: float) -> int:
    """Drop times outside the window ending at `now`; return how many remain."""
    if times and times[0] <= now - window:
        del times[: bisect_right(times, now - window)]
    return len(times)


def hit(times: list[float], now: float, window: float, cap: int) -> int:
    """Record one event at `now`; return the number of events in the window.

    At most `cap` times are kept, so the result never exceeds `cap`.
    """
    times.append(now)
    n = trim(times, now, window)
    if n > cap:
        del times[: n - cap]
        n = cap
    return n


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String(): 60 -> "1m0s", 3600 -> "1h0m0s"."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _frac(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    secs = _frac(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def _frac(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


class BoundedDistinct:
    """Distinct strings with their last-seen time, at most `cap` of them.

    When full, the entry seen longest ago makes room (O(cap), cap is small).
    """

    __slots__ = ("_cap", "_seen")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: dict[str, float] = {}

    def add(self, item: str, now: float) -> None:
        seen = self._seen
        if item not in seen and len(seen) >= self._cap:
            del seen[min(seen, key=seen.__getitem__)]
        seen[item] = now

    def count_since(self, cutoff: float) -> int:
        """How many items were seen after `cutoff`."""
        return sum(1 for t in self._seen.values() if t > cutoff)

    def items_since(self, cutoff: float) -> list[str]:
        return [item for item, t in self._seen.items() if t > cutoff]

    def __len__(self) -> int:
        return len(self._seen)


class BoundedCache(Generic[K, V]):
    """A small memo (e.g. User-Agent -> verdict) cleared wholesale when full."""

    __slots__ = ("_cap", "_data")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._data: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        if len(self._data) >= self._cap:
            self._data.clear()
        self._data[key] = value

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)
