"""Sliding-window counters and the bounded per-key containers they live in.

A window holds the sorted event times (monotonic seconds) it still needs,
trimmed on access and capped at the rule threshold: only the newest
``threshold`` times can ever decide a crossing, so nothing older is kept.
An event at time ``t`` is inside the window at ``now`` when ``t > now - window``
(a true sliding window, not the Go program's "no gap longer than" counter).

Two representations count identically (tests/test_windows.py checks
SlidingWindow against the plain-list functions `hit` / `trim` on random event
sequences):

- ``list[float]`` with the functions `hit` and `trim` (the reference);
- `SlidingWindow`, the compact one the engine keeps per source: no time yet is
  ``None``, a single time is the bare float (most sources under a spoofed
  flood send one event), two or more are an ``array('d')`` (8 bytes per time
  instead of a pointer plus a 24-byte float object). Its instances are msgspec
  Structs without a GC header (they never take part in a reference cycle).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import msgspec

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


class SlidingWindow(msgspec.Struct, gc=False):
    """One sliding window, counting exactly like `hit` / `trim` on a list.

    `times` is None (no event), a float (one event) or an array('d') (two or
    more, oldest first). Subclasses hook `_fresh()`, called when an event
    finds the window empty (a new burst).
    """

    times: float | array[float] | None = None

    def hit(self, now: float, window: float, cap: int) -> int:
        """Record one event at `now`; return the events in the window (at most `cap`, >= 1)."""
        times = self.times
        cutoff = now - window
        if isinstance(times, array):
            if times[-1] <= cutoff:
                self.times = now
                self._fresh()
                return 1
            times.append(now)
            if times[0] <= cutoff:
                del times[: bisect_right(times, cutoff)]
            n = len(times)
            if n > cap:
                del times[: n - cap]
                n = cap
            return n
        if times is None or times <= cutoff:
            self.times = now
            self._fresh()
            return 1
        if cap <= 1:
            self.times = now
            return 1
        self.times = array("d", (times, now))
        return 2

    def _fresh(self) -> None:
        """A new burst starts (the window was empty)."""

    def trim(self, now: float, window: float) -> int:
        """Forget the times outside the window ending at `now`; return how many remain."""
        times = self.times
        cutoff = now - window
        if isinstance(times, array):
            if times[0] <= cutoff:
                del times[: bisect_right(times, cutoff)]
                if not times:
                    self.times = None
            return len(times)
        if times is None or times <= cutoff:
            self.times = None
            return 0
        return 1

    def oldest(self) -> float:
        """The oldest time kept (only after `trim` returned > 0)."""
        times = self.times
        if isinstance(times, array):
            return times[0]
        if times is None:
            raise ValueError("empty window")
        return times

    def newest(self) -> float:
        """The newest time kept (only after `trim` returned > 0)."""
        times = self.times
        if isinstance(times, array):
            return times[-1]
        if times is None:
            raise ValueError("empty window")
        return times


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

    __slots__ = ("_cap", "_data", "get")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._data: dict[K, V] = {}
        # the dict's own bound get (lookups are on the hot path; `put` clears in place)
        self.get: Callable[[K], V | None] = self._data.get

    def put(self, key: K, value: V) -> None:
        if len(self._data) >= self._cap:
            self._data.clear()
        self._data[key] = value

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)
