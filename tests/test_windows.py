"""The compact per-source state of the engine (fsguard_workers.windows.SlidingWindow,
engine.Track and its dict + deque LRU) against plain references: a list of float
timestamps per window and an OrderedDict LRU."""

from __future__ import annotations

import sys
import tracemalloc
from array import array
from collections import OrderedDict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsguard_workers.engine import LRU_SLACK, DetectionEngine
from fsguard_workers.windows import SlidingWindow, hit, trim
from shared.config import Config
from tests.engine_harness import Harness, cfg
from tests.sofia_events import failure, pre_register, wrong_call_state

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# gaps include 0 (same instant) and values right at typical window sizes
gaps = st.one_of(
    st.floats(min_value=0, max_value=30, allow_nan=False),
    st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 10.0]),
)


class Probe(SlidingWindow, gc=False):
    """Counts new bursts."""

    fresh: int = 0

    def _fresh(self) -> None:
        self.fresh += 1


# --- SlidingWindow == list[float] + hit/trim ---------------------------------------------


@SETTINGS
@given(
    window=st.one_of(st.floats(min_value=0.01, max_value=40), st.sampled_from([1.0, 2.0, 5.0])),
    cap=st.integers(min_value=1, max_value=12),
    steps=st.lists(st.tuples(gaps, st.booleans()), max_size=80),
)
def test_sliding_window_counts_like_a_list_of_timestamps(
    window: float, cap: int, steps: list[tuple[float, bool]]
) -> None:
    ref: list[float] = []
    ref_bursts = 0
    win = Probe()
    now = 1000.0
    for gap, snapshot in steps:
        now += gap
        if snapshot:  # a snapshot trims without recording
            assert win.trim(now, window) == trim(ref, now, window)
        else:
            if not ref or ref[-1] <= now - window:
                ref_bursts += 1
            assert win.hit(now, window, cap) == hit(ref, now, window, cap)
        kept = win.times
        if ref:
            assert win.oldest() == ref[0] and win.newest() == ref[-1]
            if len(ref) == 1:
                assert isinstance(kept, (float, array))
            else:
                assert isinstance(kept, array) and list(kept) == ref
        else:
            assert kept is None or win.trim(now, window) == 0
        assert win.fresh == ref_bursts


def test_one_event_is_a_bare_float_shared_with_the_clock_reading() -> None:
    win = SlidingWindow()
    now = 1000.5
    assert win.hit(now, 60.0, 11) == 1
    assert win.times is now
    assert win.hit(now + 1, 60.0, 11) == 2
    assert isinstance(win.times, array) and list(win.times) == [now, now + 1]
    assert win.hit(now + 100, 60.0, 11) == 1  # all expired: back to a bare float
    assert win.times == now + 100


# --- the engine's registration-rate window and LRU vs an OrderedDict reference -------------


@SETTINGS
@given(
    limit=st.integers(min_value=1, max_value=5),
    window=st.sampled_from([1.0, 2.0, 5.0, 7.5]),
    cap=st.integers(min_value=1, max_value=6),
    events=st.lists(st.tuples(st.integers(min_value=0, max_value=9), gaps), max_size=150),
)
def test_registration_rate_bans_like_a_reference_with_lru_eviction(
    limit: int, window: float, cap: int, events: list[tuple[int, float]]
) -> None:
    """First ban per source: same event, same count, as an OrderedDict of timestamp lists
    capped at `cap` sources (LRU) where a ban restarts the source's counting, and where
    tick() forgets a source whose last registration is a whole window old."""
    config = Config()
    config.workers.max_tracked_ips = cap
    config.security.rate_limit.registration_limit = limit
    config.security.rate_limit.registration_window = window
    config.security.rate_limit.block_duration = 10**9
    config.security.enumeration.enabled = False
    h = Harness(config)
    ref: OrderedDict[str, list[float]] = OrderedDict()
    banned: set[str] = set()
    for n, (host, gap) in enumerate(events):
        ip = f"198.51.100.{host + 1}"
        h.advance(gap)
        now = h.clock.now
        times = ref.get(ip)
        if times is None:
            times = ref[ip] = []
            if len(ref) > cap:
                ref.popitem(last=False)
        else:
            ref.move_to_end(ip)
        count = hit(times, now, window, limit + 1)
        expect = count > limit and ip not in banned
        if expect:
            banned.add(ip)
            del ref[ip]  # counting starts afresh after a ban
        out = h.feed(pre_register(ip))
        assert [(b.ip, b.evidence_count) for b in out] == ([(ip, count)] if expect else []), n
        assert h.engine.stats()["tracked_ips"] == len(ref)
        if n % 11 == 0:
            h.engine.tick()
            # a source that only registered holds nothing once its window has passed
            for old in [k for k, t in ref.items() if t[-1] <= h.clock.now - window]:
                del ref[old]
            assert h.engine.stats()["tracked_ips"] == len(ref)
    snap = h.engine.rate_snapshot("registrations")
    expected = {ip: len(t) for ip, t in ref.items() if trim(t, h.clock.now, window)}
    assert {ip: s.count for ip, s in snap.items()} == expected


@SETTINGS
@given(
    limit=st.integers(min_value=1, max_value=6),
    window=st.sampled_from([1.0, 3.0, 10.0]),
    gaps_=st.lists(gaps, min_size=1, max_size=60),
)
def test_wrong_call_state_bans_like_a_reference(
    limit: int, window: float, gaps_: list[float]
) -> None:
    h = Harness(cfg(max_wrong_call_states=limit, wrong_call_state_window=window))
    ref: list[float] = []
    first = None
    for i, gap in enumerate(gaps_):
        h.advance(gap)
        n = hit(ref, h.clock.now, window, limit)
        out = h.feed(wrong_call_state("198.51.100.60"))
        if first is None and n >= limit:
            first = i
            assert [b.evidence_count for b in out] == [n]
        elif first is None:
            assert out == []
        if first is not None:
            break


# --- LRU bookkeeping stays bounded ---------------------------------------------------------


def test_tick_and_eviction_follow_last_activity() -> None:
    config = Config()
    config.workers.max_tracked_ips = 3
    h = Harness(config)
    for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        h.feed(pre_register(ip), advance=1)
    h.feed(pre_register("198.51.100.1"), advance=1)  # .1 is now the most recent
    h.feed(pre_register("198.51.100.4"), advance=1)  # evicts .2, the least recent
    assert set(h.engine.rate_snapshot("registrations")) == {
        "198.51.100.1",
        "198.51.100.3",
        "198.51.100.4",
    }
    # registration-only sources are forgotten once registration_window has passed:
    # .3 (t=3) and .1 (t=4) idle for >= 60 s; .4 (t=5) not yet
    assert config.security.rate_limit.registration_window == 60
    h.advance(60 - 0.5)
    h.engine.tick()
    stats = h.engine.stats()
    assert stats["tracked_ips"] == 1 and stats["expired"] == 2
    h.feed(pre_register("198.51.100.4"), advance=0)  # still tracked: its count goes on
    assert h.engine.stats()["tracked_ips"] == 1
    h.advance(1)
    h.engine.tick()
    assert h.engine.stats()["tracked_ips"] == 1  # touched again just now


def test_stale_lru_entries_are_dropped() -> None:
    h = Harness()
    h.config.security.max_failed_attempts = 10**6
    h.config.security.enumeration.enabled = False
    engine = h.engine
    for i in range(3 * LRU_SLACK):
        h.feed(failure(f"198.51.100.{i % 4 + 1}"), advance=0.001)
    engine.tick()
    assert engine.stats()["tracked_ips"] == 4
    assert len(engine._lru_keys) == len(engine._lru_times) <= 2 * 4 + LRU_SLACK
    assert engine.failed_snapshot()["198.51.100.1"].count == 3 * LRU_SLACK // 4


def test_tracked_dict_is_compacted_under_churn() -> None:
    """Evictions leave dummy slots; the engine copies the dict before CPython grows it to
    3x its live entries, so the table stays near the size of a fresh dict of `cap` entries."""
    config = Config()
    config.workers.max_tracked_ips = 5000
    engine = DetectionEngine(config)
    for i in range(60_000):
        engine.handle(pre_register(f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"), 0.0)
    fresh = {k: None for k in range(5000)}
    tracks = engine._tracks
    assert len(tracks) == 5000 and engine.stats()["evictions"] == 55_000
    assert sys.getsizeof(tracks) <= 2 * sys.getsizeof(fresh)
    assert len(engine._lru_keys) <= 2 * 5000 + LRU_SLACK


def test_bytes_per_tracked_source_under_a_flood() -> None:
    """Regression guard for the flood requirement (bench/bench_flood.py): one
    pre_register from each of many addresses costs < 240 traced bytes per tracked source
    (the old Track + Window + list + OrderedDict layout cost ~430), not counting the
    bounded address-parse cache."""
    config = Config()
    config.workers.max_tracked_ips = 20_000
    engine = DetectionEngine(config)
    bodies = [
        pre_register(f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}") for i in range(40_000)
    ]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            engine.handle(body, 0.0)
        engine._sources._data.clear()  # bounded (16384 entries), not per tracked source
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert engine.stats()["tracked_ips"] == 20_000
    assert used / 20_000 < 240, used / 20_000
