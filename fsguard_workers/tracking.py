"""The per-source state of the detection engine: tracked sources (their windows),
ban records, learned and manual whitelist entries, and their bounded expiry.

State is keyed by an int per source (IPv4: the address; IPv6: a flag bit plus
the address masked to `security.ipv6_ban_prefix`), which is smaller and
cheaper than text keys (keys.py). All per-source state is bounded:

- `_tracks` (windows per source) is an LRU capped at `workers.max_tracked_ips`,
  so `tick()` expires idle sources from the least recently active end a few
  at a time (see "Memory" below for how the LRU order is kept);
- `_bans` (ban expiry and recidive history) and `_learned` (learned whitelist)
  share the same cap and are swept round-robin by `tick()`;
- users per source are capped at USERS_PER_SOURCE.

Times are monotonic (`clock`); wall time (`wallclock`) is only used to render
snapshots and to read ListChange expiries.

Memory (a spoofed-source flood fills `_tracks` to its cap, so the bytes per
tracked source are what matters; see bench/bench_flood.py):

- a `Track` is one msgspec Struct without a GC header that *is* the source's
  registration-rate window (the one a flood fills) and points to its other
  windows (`MoreWindows`, allocated on first use); a window holding one event keeps the bare
  float (shared with `Track.last`), more events an array('d')
  (windows.SlidingWindow);
- `_tracks` is a plain dict (an OrderedDict costs ~70 more bytes per entry).
  The LRU order lives in two deques, `_lru_keys` / `_lru_times`: every touch
  appends (key, the `now` object stored in `Track.last`); an entry is current
  when `_tracks[key].last is` its time object, older entries of the same key
  are stale and skipped when they reach the front (and dropped in bulk when
  they outnumber the current ones). With the real clock every reading is a new
  float object, so this is exact LRU; with a clock that returns the very same
  object for touches of several sources, ties between them break arbitrarily;
- deleting from a dict leaves a dummy slot, and CPython resizes a dict whose
  slots are used up to 3x its live entries (2**20 slots for 200,000 sources,
  ~105 bytes per entry), so `_tracks` is copied (compacted, ~45 bytes per
  entry) once deletions reach a quarter of its size.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from shared.config import RecidiveConfig

from .rules.protection import Protection
from .state import BanRecord, MoreWindows, Track, WhitelistEntry
from .windows import BoundedCache

TICK_BUDGET = 2048  # tracked sources examined per tick() (~0.5 ms; 20k/s at 10 ticks/s)
SWEEP_BUDGET = 64  # ban / whitelist entries examined per tick()
LRU_SLACK = 4096  # stale LRU entries tolerated beyond the number of tracked sources


class Tracking:
    """Mixin of DetectionEngine (the attributes below are set by the engine)."""

    _clock: Callable[[], float]
    _cap: int
    _idle_after: float
    _plain_idle_after: float
    _recidive: RecidiveConfig
    _tracks: dict[int, Track]
    _lru_keys: deque[int]
    _lru_times: deque[float]
    _lru_push_key: Callable[[int], None]
    _lru_push_time: Callable[[float], None]
    _deleted: int
    _bans: OrderedDict[int, BanRecord]
    _learned: OrderedDict[int, WhitelistEntry]
    _manual: dict[int, float]
    _protection: Protection
    _strings: BoundedCache[str, str]
    _c: dict[str, int]

    def tick(self) -> None:
        """Expire a bounded number of idle entries (no full sweep)."""
        now = self._clock()
        tracks = self._tracks
        keys = self._lru_keys
        times = self._lru_times
        cutoff = now - self._idle_after
        plain_cutoff = now - min(self._plain_idle_after, self._idle_after)
        for _ in range(TICK_BUDGET):
            if not keys:
                break
            key = keys[0]
            t = times[0]
            tr = tracks.get(key)
            if tr is not None and tr.last is t:
                if t > plain_cutoff:
                    break
                if t > cutoff and tr.more is not None:
                    # idle long enough for a plain track only: to the back, still current
                    self._lru_push_key(key)
                    self._lru_push_time(t)
                else:
                    del tracks[key]
                    self._deleted += 1
                    self._c["expired"] += 1
            keys.popleft()  # expired, moved or stale
            times.popleft()
        if self._deleted > (len(tracks) >> 2) + 1024:
            # after a flood expires: copy to give the table's memory back
            self._tracks = tracks = dict(tracks)
            self._deleted = 0
        if len(keys) > (len(tracks) << 1) + LRU_SLACK:
            self._compact_lru()
        bans = self._bans
        keep_for = self._recidive.window if self._recidive.enabled else 0.0
        for _ in range(min(SWEEP_BUDGET, len(bans))):
            key, rec = next(iter(bans.items()))
            if rec.until <= now and now - max(rec.last, rec.until) >= keep_for:
                del bans[key]
            else:
                bans.move_to_end(key)
        self._protection.sweep(now, SWEEP_BUDGET)
        learned = self._learned
        for _ in range(min(SWEEP_BUDGET, len(learned))):
            key, entry = next(iter(learned.items()))
            if entry.expires <= now:
                del learned[key]
            else:
                learned.move_to_end(key)

    @property
    def expired(self) -> int:
        """Sources forgotten by tick() so far (cheap: the worker trims memory after them)."""
        return self._c["expired"]

    @staticmethod
    def _more(tr: Track) -> MoreWindows:
        more = tr.more
        if more is None:
            more = tr.more = MoreWindows()
        return more

    def _track(self, key: int, now: float) -> Track:
        tracks = self._tracks
        tr = tracks.get(key)
        if tr is None:
            tr = tracks[key] = Track(last=now)
            if len(tracks) > self._cap:
                self._evict()
            if self._deleted > (len(tracks) >> 2) + 1024:
                # copy to drop the dummy slots before CPython grows the table
                self._tracks = dict(tracks)
                self._deleted = 0
            if len(self._lru_keys) > (len(tracks) << 1) + LRU_SLACK:
                self._compact_lru()
        else:
            tr.last = now
        # stale entries of touched sources are dropped here and by tick()
        self._lru_push_key(key)
        self._lru_push_time(now)
        return tr

    def _evict(self) -> None:
        """Drop the least recently active source."""
        tracks = self._tracks
        keys = self._lru_keys
        times = self._lru_times
        while keys:
            key = keys.popleft()
            t = times.popleft()
            tr = tracks.get(key)
            if tr is not None and tr.last is t:
                del tracks[key]
                self._deleted += 1
                self._c["evictions"] += 1
                return

    def _compact_lru(self) -> None:
        """Drop the stale LRU entries (amortised: they outnumber the current ones)."""
        get = self._tracks.get
        keys: deque[int] = deque()
        times: deque[float] = deque()
        for key, t in zip(self._lru_keys, self._lru_times, strict=True):
            tr = get(key)
            if tr is not None and tr.last is t:
                keys.append(key)
                times.append(t)
        self._lru_keys = keys
        self._lru_times = times
        self._lru_push_key = keys.append
        self._lru_push_time = times.append

    def _forget(self, key: int) -> None:
        """Stop tracking a source (its LRU entries go stale)."""
        if self._tracks.pop(key, None) is not None:
            self._deleted += 1

    def _whitelisted(self, key: int, now: float) -> bool:
        entry = self._learned.get(key)
        if entry is not None:
            if entry.expires > now:
                return True
            del self._learned[key]
        until = self._manual.get(key)
        if until is not None:
            if until > now:
                return True
            del self._manual[key]
        return False

    def _banned(self, key: int, now: float) -> bool:
        rec = self._bans.get(key)
        return rec is not None and rec.until > now

    def _new_ban_record(self, key: int) -> BanRecord:
        rec = self._bans[key] = BanRecord()
        if len(self._bans) > self._cap:
            self._bans.popitem(last=False)
        return rec

    def _intern(self, value: str) -> str:
        shared = self._strings.get(value)
        if shared is None:
            self._strings.put(value, value)
            return value
        return shared
