"""The per-shard detection engine: decoded events in, ban decisions and call kills out.

State is keyed by an int per source (IPv4: the address; IPv6: a flag bit plus
the address masked to `security.ipv6_ban_prefix`), which is smaller and
cheaper than text keys. All per-source state is bounded:

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

import ipaddress
import logging
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.config import Config
from shared.iputil import IPAddress, NetworkSet, parse_ip
from shared.messages import BanDecision, KillCall, ListChange
from shared.recidive import recidive_duration

from . import rules
from .events import DecodeFailure, Event, EventDecoder, Kind, is_forged, kind_of, text
from .events import maybe_relevant as _maybe_relevant
from .netlist import NetworkWhitelist
from .repair import needs_checks
from .windows import BoundedCache, BoundedDistinct, SlidingWindow

log = logging.getLogger(__name__)

USERS_PER_SOURCE = 32
DOMAINS_PER_SOURCE = 8
TICK_BUDGET = 256  # tracked sources examined per tick()
SWEEP_BUDGET = 64  # ban / whitelist entries examined per tick()
LRU_SLACK = 4096  # stale LRU entries tolerated beyond the number of tracked sources

_V6 = 1 << 128
_ALL128 = _V6 - 1
_INF = math.inf
_IGNORED_USERS = frozenset(("", "unknown"))

_PRE_REGISTER = Kind.PRE_REGISTER
_REGISTER_ATTEMPT = Kind.REGISTER_ATTEMPT
_REGISTER = Kind.REGISTER
_REGISTER_FAILURE = Kind.REGISTER_FAILURE
_WRONG_CALL_STATE = Kind.WRONG_CALL_STATE
_CHANNEL_CREATE = Kind.CHANNEL_CREATE
_OTHER = Kind.OTHER

_EVENT_NAMES = {
    Kind.PRE_REGISTER: "sofia::pre_register",
    Kind.REGISTER_ATTEMPT: "sofia::register_attempt",
    Kind.REGISTER: "sofia::register",
    Kind.REGISTER_FAILURE: "sofia::register_failure",
    Kind.WRONG_CALL_STATE: "sofia::wrong_call_state",
    Kind.CHANNEL_CREATE: "CHANNEL_CREATE",
}

Output = BanDecision | KillCall


class Window(SlidingWindow, gc=False):
    """One sliding window of one rule for one source, with who was involved.

    `users` / `domains` hold a single string until a second distinct one shows
    up (most sources only ever use one): a list costs 64+ bytes per source.
    """

    users: str | list[str] | None = None
    domains: str | list[str] | None = None

    def _fresh(self) -> None:  # a new burst: forget the old details
        self.users = None
        self.domains = None

    def note(self, user: str, domain: str) -> None:
        # written out (and no store when nothing changes): this runs on every counted event
        if user not in _IGNORED_USERS:
            users = self.users
            if users is None:
                self.users = user
            elif users is not user and users != user:
                self.users = _add_capped(users, user, USERS_PER_SOURCE)
        if domain:
            domains = self.domains
            if domains is None:
                self.domains = domain
            elif domains is not domain and domains != domain:
                self.domains = _add_capped(domains, domain, DOMAINS_PER_SOURCE)

    def user_list(self) -> list[str]:
        return _as_list(self.users)

    def domain_list(self) -> list[str]:
        return _as_list(self.domains)


class FailWindow(Window, gc=False):
    """The failed-auth window, plus who failed when (distinct users) and the
    digest username of the last FORBIDDEN register_attempt, which names the account
    of the register_failure that follows (whose to-user is the dialled number for an
    INVITE)."""

    pending_user: str = ""
    seen: BoundedDistinct | None = None


def _add_capped(current: str | list[str] | None, item: str, cap: int) -> str | list[str]:
    if current is None or current == item:
        return item
    if isinstance(current, str):
        return [current, item]
    if item not in current and len(current) < cap:
        current.append(item)
    return current


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class MoreWindows(msgspec.Struct, gc=False):
    """A source's windows other than the registration-rate one, allocated on first use."""

    call: Window | None = None
    fail: FailWindow | None = None
    wcs: Window | None = None

    def fail_window(self) -> FailWindow:
        if self.fail is None:
            self.fail = FailWindow()
        return self.fail

    def wcs_window(self) -> Window:
        if self.wcs is None:
            self.wcs = Window()
        return self.wcs

    def call_window(self) -> Window:
        if self.call is None:
            self.call = Window()
        return self.call


class Track(Window, gc=False):
    """Everything counted for one source, in one 56-byte object when the source
    only sent registrations (a spoofed flood). The track itself is the
    registration-rate window; `more` holds the other windows. `last` is the
    `now` of the latest touch (its identity marks the current LRU entry)."""

    last: float = 0.0
    more: MoreWindows | None = None


class BanRecord:
    __slots__ = ("count", "last", "until")

    def __init__(self) -> None:
        self.until = 0.0  # monotonic; inf = permanent
        self.count = 0  # bans within the recidive window, this one included
        self.last = -_INF  # monotonic time of the last ban


class WhitelistEntry:
    __slots__ = ("added", "domain", "expires", "last_seen", "user")

    def __init__(self, added: float, now: float, ttl: float, user: str, domain: str) -> None:
        self.added = added  # wall time
        self.last_seen = now
        self.expires = now + ttl
        self.user = user
        self.domain = domain


class DetectionEngine:
    """Runs fsguard's detection rules over the events of one shard."""

    def __init__(
        self,
        config: Config,
        *,
        worker_index: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        sec = config.security
        self._sec = sec
        self._rl = sec.rate_limit
        self._enum = sec.enumeration
        self._recidive = sec.recidive
        self._default_domain = config.freeswitch.default_domain
        self._worker = worker_index
        self._id_prefix = f"w{worker_index}-{os.getpid()}-"
        self._clock = clock
        self._wallclock = wallclock
        self._decoder = EventDecoder()
        self._decode = self._decoder.decode_fast

        self._trusted = NetworkSet()
        self._trusted_v6: list[ipaddress.IPv6Network] = []
        self._bad_config = 0
        for cidr in sec.trusted_networks:
            try:
                self._trusted.add(cidr)
            except ValueError:
                self._bad_config += 1
                log.warning("ignoring invalid trusted network %r", cidr)
                continue
            net = ipaddress.ip_network(cidr.strip(), strict=False)
            if isinstance(net, ipaddress.IPv6Network):
                self._trusted_v6.append(net)
        self._scanner = rules.ScannerMatcher(sec.scanner_user_agents)
        self._untrusted = rules.UntrustedMatcher(sec.untrusted_networks)
        self._toll = rules.TollFraudMatcher(sec.toll_fraud)

        self._prefix = min(128, max(48, sec.ipv6_ban_prefix))
        self._v6_mask = _ALL128 ^ ((1 << (128 - self._prefix)) - 1)
        self._prefix_safe: BoundedCache[int, bool] = BoundedCache(4096)
        # users and domains repeat across sources: share one string object per value
        self._strings: BoundedCache[str, str] = BoundedCache(8192)
        # source text -> (address, key, trusted): parsing and the trusted lookup cost
        # ~5 µs, and a few addresses make most of the traffic
        self._sources: BoundedCache[str, tuple[IPAddress, int, bool]] = BoundedCache(16384)
        self._cap = max(1, config.workers.max_tracked_ips)
        self._rate_on = self._rl.enabled
        self._idle_after = max(
            sec.failed_attempts_window,
            sec.wrong_call_state_window,
            self._enum.window if self._enum.enabled else 0.0,
            self._rl.registration_window,
            self._rl.call_rate_interval,
        )

        self._tracks: dict[int, Track] = {}
        self._lru_keys: deque[int] = deque()  # touch order, oldest first (see module doc)
        self._lru_times: deque[float] = deque()
        self._lru_push_key = self._lru_keys.append
        self._lru_push_time = self._lru_times.append
        self._deleted = 0  # deletions from _tracks since it was last compacted
        self._bans: OrderedDict[int, BanRecord] = OrderedDict()
        self._learned: OrderedDict[int, WhitelistEntry] = OrderedDict()
        self._manual: dict[int, float] = {}  # whitelist entries from the firewall
        self._wl_nets = NetworkWhitelist(wallclock)  # whitelisted networks (netlist.py)
        self._out: list[Output] = []
        self._seq = 0
        self._c: dict[str, int] = dict.fromkeys(
            (
                "processed",
                "irrelevant",
                "decode_errors",
                "forged",
                "ignored",
                "trusted_skipped",
                "decisions",
                "suppressed",
                "kills",
                "evictions",
                "expired",
                "whitelist_learned",
                "list_changes",
                "list_changes_ignored",
                "internal_errors",
                # The Go /security/stats totals (events from untrusted sources only).
                "registrations",
                "failed_registrations",
                "wrong_call_states",
            ),
            0,
        )
        self._untrusted_entries: list[str] = list(sec.untrusted_networks)

    # --- public interface ----------------------------------------------------------

    def handle(self, body: bytes, read_ts: float) -> None:
        """Decode one raw JSON event body and run the rules. Never raises."""
        c = self._c
        c["processed"] += 1
        if not _maybe_relevant(body):
            c["irrelevant"] += 1
            return
        try:
            if needs_checks(body):  # size or nesting near a limit: checked before decoding
                raise DecodeFailure
            ev = self._decode(body)
        except Exception:  # any bad body takes the slow path: limits, then repairs
            try:
                ev = self._decoder.decode(body)  # counts and logs (rate-limited) a failure
            except DecodeFailure:
                c["decode_errors"] += 1
                return
        kind = kind_of(ev)
        if kind is _OTHER:
            c["irrelevant"] += 1
            return
        if is_forged(ev, body):
            c["forged"] += 1
            return
        src = ev.source_ip()
        known = self._sources.get(src)
        if known is None:
            try:
                addr = parse_ip(src)
            except ValueError:
                c["ignored"] += 1
                return
            known = (addr, self._key(addr), self._trusted.contains(addr))
            self._sources.put(src, known)
        addr, key, trusted = known
        if trusted:
            c["trusted_skipped"] += 1
            return
        if self._wl_nets.entries and self._wl_nets.skip(addr):
            return
        try:
            self._dispatch(kind, ev, addr, key, read_ts)
        except Exception:  # pragma: no cover - a bug, not bad input: count, log, go on
            c["internal_errors"] += 1
            log.exception("rule evaluation failed")

    def drain(self) -> list[Output]:
        out = self._out
        self._out = []
        return out

    def on_list_change(self, change: ListChange) -> None:
        if change.list == "untrusted":  # the pattern travels in `ip`
            self._on_untrusted_change(change)
            return
        if change.list == "whitelist" and self._wl_nets.on_change(change):
            self._c["list_changes"] += 1
            return
        key = self._key_of_text(change.ip)
        if key is None:
            self._c["list_changes_ignored"] += 1
            return
        self._c["list_changes"] += 1
        now = self._clock()
        until = _INF if change.expires <= 0 else now + (change.expires - self._wallclock())
        if change.list == "whitelist":
            if change.op == "add":
                if until > now:
                    self._manual[key] = until
                    if len(self._manual) > self._cap:
                        del self._manual[next(iter(self._manual))]
            elif change.op == "remove":
                self._manual.pop(key, None)
                self._learned.pop(key, None)
        elif change.list == "blacklist":
            if change.op == "add":
                if until > now:
                    rec = self._bans.get(key)
                    if rec is None:
                        rec = self._new_ban_record(key)
                    rec.until = until
            elif change.op == "remove":
                rec = self._bans.get(key)
                if rec is not None:
                    rec.until = min(rec.until, now)  # released now; recidive history stays
                self._forget(key)

    def _on_untrusted_change(self, change: ListChange) -> None:
        """A run-time untrusted pattern added or removed (API): rebuild the matcher."""
        pattern = change.ip.strip()
        entries = self._untrusted_entries
        present = [e for e in entries if e.strip().lower() == pattern.lower()]
        if change.op == "add" and pattern and not present:
            entries.append(pattern)
        elif change.op == "remove" and present:
            self._untrusted_entries = entries = [e for e in entries if e not in present]
        else:
            self._c["list_changes_ignored"] += 1
            return
        self._c["list_changes"] += 1
        self._untrusted = rules.UntrustedMatcher(entries)

    def untrusted_patterns(self) -> list[str]:
        return list(self._untrusted_entries)

    def tick(self) -> None:
        """Expire a bounded number of idle entries (no full sweep)."""
        now = self._clock()
        tracks = self._tracks
        keys = self._lru_keys
        times = self._lru_times
        cutoff = now - self._idle_after
        for _ in range(TICK_BUDGET):
            if not keys:
                break
            key = keys[0]
            t = times[0]
            tr = tracks.get(key)
            if tr is not None and tr.last is t:
                if t > cutoff:
                    break
                del tracks[key]
                self._deleted += 1
                self._c["expired"] += 1
            keys.popleft()  # expired or stale
            times.popleft()
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
        learned = self._learned
        for _ in range(min(SWEEP_BUDGET, len(learned))):
            key, entry = next(iter(learned.items()))
            if entry.expires <= now:
                del learned[key]
            else:
                learned.move_to_end(key)

    def stats(self) -> dict[str, int]:
        data = dict(self._c)
        now = self._clock()
        data["invalid_utf8"] = self._decoder.invalid_utf8
        data["decode_salvaged"] = self._decoder.salvaged
        data["decode_refused"] = self._decoder.refused
        data["tracked_ips"] = len(self._tracks)
        data["ban_records"] = len(self._bans)
        data["active_bans"] = sum(1 for rec in self._bans.values() if rec.until > now)
        data["whitelisted"] = len(self._learned)
        data["manual_whitelist"] = len(self._manual)
        data["whitelist_networks"] = len(self._wl_nets)
        data["whitelist_network_skipped"] = self._wl_nets.skipped
        data["bad_config_entries"] = self._bad_config
        return data

    def _snapshot(
        self,
        pick: Callable[[Track], Any],
        window: float,
        render: Callable[[Any, int, float, Callable[[float], str]], dict[str, Any]],
    ) -> dict[str, dict[str, Any]]:
        """ip -> render(win, live count, now, wall-clock formatter) for every source whose
        picked window still holds events (the Go snapshot endpoints)."""
        now = self._clock()
        wall = self._wall_of(now)
        out: dict[str, dict[str, Any]] = {}
        for key, tr in self._tracks.items():
            win = pick(tr)
            if win is None:
                continue
            count = win.trim(now, window)
            if count:
                out[self._key_text(key)] = render(win, count, now, wall)
        return out

    def failed_snapshot(self) -> dict[str, dict[str, Any]]:
        """GET /security/failed: ip -> {count, firstAttempt, lastAttempt, userIds, domains}."""
        window = self._sec.failed_attempts_window
        return self._snapshot(
            lambda tr: tr.more.fail if tr.more else None,
            window,
            lambda win, count, now, wall: {
                "count": count,
                "firstAttempt": wall(win.oldest()),
                "lastAttempt": wall(win.newest()),
                "userIds": win.seen.items_since(now - window) if win.seen else [],
                "domains": win.domain_list(),
            },
        )

    def wrong_call_state_snapshot(self) -> dict[str, dict[str, Any]]:
        """GET /security/wrong-call-states: ip -> {count, firstAttempt, lastAttempt, userIds}."""
        return self._snapshot(
            lambda tr: tr.more.wcs if tr.more else None,
            self._sec.wrong_call_state_window,
            lambda win, count, now, wall: {
                "count": count,
                "firstAttempt": wall(win.oldest()),
                "lastAttempt": wall(win.newest()),
                "userIds": win.user_list(),
            },
        )

    def rate_snapshot(self, kind: str) -> dict[str, dict[str, Any]]:
        """kind: "calls" or "registrations"."""
        if kind == "calls":
            window = self._rl.call_rate_interval
            pick: Callable[[Track], Any] = lambda tr: tr.more.call if tr.more else None  # noqa: E731
        elif kind == "registrations":
            window = self._rl.registration_window
            pick = lambda tr: tr  # noqa: E731  (the registration window lives in the Track)
        else:
            raise ValueError(f"unknown rate kind: {kind!r}")
        return self._snapshot(
            pick,
            window,
            lambda win, count, now, wall: {
                "count": count,
                "firstRequest": wall(win.oldest()),
                "lastRequest": wall(win.newest()),
                "userIds": win.user_list(),
                "domains": win.domain_list(),
            },
        )

    def whitelist_snapshot(self) -> dict[str, dict[str, Any]]:
        """Learned whitelist: ip -> {ip, addedAt, expiresAt, lastSeen, userId, domain, ...}."""
        now = self._clock()
        wall = self._wall_of(now)
        out: dict[str, dict[str, Any]] = {}
        for key, entry in self._learned.items():
            if entry.expires <= now:
                continue
            ip = self._key_text(key)
            out[ip] = {
                "ip": ip,
                "addedAt": _rfc3339(entry.added),
                "expiresAt": wall(entry.expires),
                "lastSeen": wall(entry.last_seen),
                "userId": entry.user,
                "domain": entry.domain,
                "permanent": False,
            }
        return out

    # --- dispatch ----------------------------------------------------------------------

    def _dispatch(self, kind: Kind, ev: Event, addr: IPAddress, key: int, read_ts: float) -> None:
        now = self._clock()
        if kind is _REGISTER:
            self._on_register(ev, addr, key, now, read_ts)
        elif kind is _CHANNEL_CREATE:
            self._on_channel_create(ev, addr, key, now, read_ts)
        elif kind is _REGISTER_FAILURE:
            self._on_failure(ev, addr, key, now, read_ts)
        elif kind is _WRONG_CALL_STATE:
            self._on_wrong_call_state(ev, addr, key, now, read_ts)
        else:
            self._on_attempt(kind, ev, addr, key, now, read_ts)

    def _instant(
        self, kind: Kind, ev: Event, ua: str, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> str:
        """Rules that ban on a single event: untrusted source network, scanner UA.

        Returns the kill reason when one matched ("" otherwise), whether or not a
        decision was emitted (auto-block off, already banned).
        """
        untrusted = self._untrusted
        if untrusted.has_networks:
            net = untrusted.network(addr)
            if net:
                self._ban(
                    key,
                    addr,
                    rules.UNTRUSTED_NETWORK,
                    rules.reason_untrusted_network(net),
                    self._sec.block_duration,
                    now,
                    read_ts,
                    ev,
                    kind,
                    ua=ua,
                    evidence={"network": net},
                )
                return "untrusted-network"
        if ua:
            pattern = self._scanner.match(ua)
            if pattern:
                self._ban(
                    key,
                    addr,
                    rules.SCANNER_UA,
                    rules.reason_scanner(ua),
                    self._sec.block_duration,
                    now,
                    read_ts,
                    ev,
                    kind,
                    ua=ua,
                    user=_user_of(kind, ev),
                    evidence={"pattern": pattern},
                )
                return "scanner"
        return ""

    def _on_attempt(
        self, kind: Kind, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        """sofia::pre_register / register_attempt: scanners and the registration rate."""
        ua = text(ev.user_agent)
        if self._instant(kind, ev, ua, addr, key, now, read_ts):
            return
        tr: Track | None = None
        if kind is _REGISTER_ATTEMPT and ev.auth_result == "FORBIDDEN":
            # counted once, on the register_failure that follows; remember the account
            tr = self._track(key, now)
            fail = self._more(tr).fail_window()
            fail.pending_user = self._intern(text(ev.username) or text(ev.to_user))
        rl = self._rl
        if not self._rate_on or rl.registration_limit <= 0:
            return
        if rl.whitelist_bypass and self._whitelisted(key, now):
            return
        if tr is None:
            tr = self._track(key, now)
        win = tr  # the registration window is the track itself
        n = win.hit(now, rl.registration_window, rl.registration_limit + 1)
        win.note(self._intern(_user_of(kind, ev)), self._intern(text(ev.from_host)))
        if n > rl.registration_limit and rl.auto_block_on_exceed:
            self._ban(
                key,
                addr,
                rules.REGISTRATION_RATE,
                rules.reason_rate("registration", n, rl.registration_window),
                rl.block_duration,
                now,
                read_ts,
                ev,
                kind,
                ua=ua,
                count=n,
                user=_user_of(kind, ev),
                evidence={
                    "users": win.user_list(),
                    "domains": win.domain_list(),
                    "window": rl.registration_window,
                    "events": ["sofia::pre_register", "sofia::register_attempt"],
                },
            )

    def _on_register(
        self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        """sofia::register (success): whitelist the source, unless it is a scanner."""
        self._c["registrations"] += 1
        ua = text(ev.user_agent)
        if self._instant(_REGISTER, ev, ua, addr, key, now, read_ts):
            return  # a scanner that cracked a password: banned, never whitelisted
        if not self._sec.auto_whitelist_on_success or self._banned(key, now):
            return
        entry = self._learned.get(key)
        user = text(ev.username) or text(ev.to_user)
        domain = text(ev.from_host) or self._default_domain
        if entry is None:
            self._learned[key] = WhitelistEntry(
                self._wallclock(), now, self._sec.whitelist_ttl, user, domain
            )
            self._c["whitelist_learned"] += 1
            if len(self._learned) > self._cap:
                self._learned.popitem(last=False)
        else:
            entry.last_seen = now
            entry.expires = now + self._sec.whitelist_ttl
            entry.user = user
            entry.domain = domain
            self._learned.move_to_end(key)

    def _on_failure(self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float) -> None:
        """sofia::register_failure (REGISTER and INVITE): untrusted domain,
        enumeration, failed-auth window."""
        self._c["failed_registrations"] += 1
        kind = _REGISTER_FAILURE
        ua = text(ev.user_agent)
        if self._instant(kind, ev, ua, addr, key, now, read_ts):
            return
        sec = self._sec
        host = text(ev.to_host) or text(ev.from_host) or self._default_domain
        bad = self._untrusted.domain(host)
        if bad:
            self._ban(
                key,
                addr,
                rules.UNTRUSTED_DOMAIN,
                rules.reason_failed_untrusted(bad),
                sec.block_duration,
                now,
                read_ts,
                ev,
                kind,
                ua=ua,
                user=text(ev.to_user),
                evidence={"domain": bad},
            )
            return
        tr = self._track(key, now)
        win = self._more(tr).fail_window()
        user = win.pending_user or self._intern(text(ev.to_user))
        win.pending_user = ""
        users = win.seen
        if users is None:
            users = win.seen = BoundedDistinct(max(USERS_PER_SOURCE, self._enum.max_distinct_users))
        if user not in _IGNORED_USERS:
            users.add(user, now)
        enum = self._enum
        if enum.enabled and enum.max_distinct_users > 0:
            distinct = users.count_since(now - enum.window)
            if distinct >= enum.max_distinct_users:
                names = users.items_since(now - enum.window)
                self._ban(
                    key,
                    addr,
                    rules.ENUMERATION,
                    rules.reason_enumeration(distinct, enum.window),
                    sec.block_duration,
                    now,
                    read_ts,
                    ev,
                    kind,
                    ua=ua,
                    user=user,
                    count=distinct,
                    evidence={"users": names, "window": enum.window},
                )
                return
        limit = sec.max_failed_attempts
        if limit <= 0:
            return
        n = win.hit(now, sec.failed_attempts_window, limit)
        win.note("", self._intern(normalize_host(host)))
        if n < limit:
            return
        distinct = users.count_since(now - sec.failed_attempts_window)
        if distinct < 2 and self._whitelisted(key, now):
            return  # one misconfigured phone behind a known-good NAT
        self._ban(
            key,
            addr,
            rules.FAILED_AUTH,
            rules.reason_failed(limit),
            sec.block_duration,
            now,
            read_ts,
            ev,
            kind,
            ua=ua,
            user=user,
            count=n,
            evidence={
                "users": users.items_since(now - sec.failed_attempts_window),
                "domains": win.domain_list(),
                "registration_type": ev.registration_type,
                "window": sec.failed_attempts_window,
            },
        )

    def _on_wrong_call_state(
        self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        self._c["wrong_call_states"] += 1
        kind = _WRONG_CALL_STATE
        if self._instant(kind, ev, "", addr, key, now, read_ts):
            return
        sec = self._sec
        limit = sec.max_wrong_call_states
        if limit <= 0:
            return
        tr = self._track(key, now)
        win = self._more(tr).wcs_window()
        n = win.hit(now, sec.wrong_call_state_window, limit)
        user = self._intern(text(ev.from_user_us))
        win.note(user, "")
        if n < limit:
            return
        if len(win.user_list()) < 2 and self._whitelisted(key, now):
            return
        self._ban(
            key,
            addr,
            rules.WRONG_CALL_STATE,
            rules.reason_wrong_call_state(limit),
            sec.block_duration,
            now,
            read_ts,
            ev,
            kind,
            user=user,
            count=n,
            evidence={"users": win.user_list(), "window": sec.wrong_call_state_window},
        )

    def _on_channel_create(
        self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        """CHANNEL_CREATE: banned source, toll fraud, scanner, untrusted domain, call rate."""
        kind = _CHANNEL_CREATE
        uuid = ev.unique_id
        if self._banned(key, now):
            self._kill(uuid, "banned")
            return
        ua = text(ev.sip_user_agent)
        destination = text(ev.destination)
        user = _user_of(kind, ev)
        sec = self._sec
        if self._toll.match(ev.sofia_profile, ev.caller_context, destination, ev.sip_authorized):
            self._ban(
                key,
                addr,
                rules.TOLL_FRAUD,
                rules.reason_toll_fraud(destination, ev.sofia_profile, ev.caller_context),
                sec.block_duration,
                now,
                read_ts,
                ev,
                kind,
                ua=ua,
                user=user,
                evidence={
                    "destination": destination,
                    "profile": ev.sofia_profile,
                    "context": ev.caller_context,
                },
            )
            self._kill(uuid, "toll-fraud")
            return
        why = self._instant(kind, ev, ua, addr, key, now, read_ts)
        if why:
            self._kill(uuid, why)
            return
        from_host = text(ev.sip_from_host)
        bad = self._untrusted.domain(from_host)
        if bad:
            self._ban(
                key,
                addr,
                rules.UNTRUSTED_DOMAIN,
                rules.reason_call_untrusted(bad),
                sec.block_duration,
                now,
                read_ts,
                ev,
                kind,
                ua=ua,
                user=user,
                evidence={"domain": bad},
            )
            self._kill(uuid, "untrusted-domain")
            return
        rl = self._rl
        if not self._rate_on or rl.call_rate_limit <= 0:
            return
        if rl.whitelist_bypass and self._whitelisted(key, now):
            return
        tr = self._track(key, now)
        win = self._more(tr).call_window()
        n = win.hit(now, rl.call_rate_interval, rl.call_rate_limit + 1)
        win.note(self._intern(user), self._intern(from_host))
        if n <= rl.call_rate_limit:
            return
        self._kill(uuid, "rate-limited")
        if rl.auto_block_on_exceed:
            self._ban(
                key,
                addr,
                rules.CALL_RATE,
                rules.reason_rate("call", n, rl.call_rate_interval),
                rl.block_duration,
                now,
                read_ts,
                ev,
                kind,
                ua=ua,
                user=user,
                count=n,
                evidence={
                    "users": win.user_list(),
                    "domains": win.domain_list(),
                    "window": rl.call_rate_interval,
                },
            )

    # --- state helpers -------------------------------------------------------------------

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

    def _ban(
        self,
        key: int,
        addr: IPAddress,
        rule: str,
        reason: str,
        base_duration: float,
        now: float,
        read_ts: float,
        ev: Event,
        kind: Kind,
        *,
        ua: str = "",
        user: str = "",
        count: int = 1,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        """Emit one decision per crossing: nothing while a ban of the key is active."""
        if not self._sec.auto_block_enabled:
            self._c["suppressed"] += 1
            return
        rec = self._bans.get(key)
        if rec is not None and rec.until > now:
            return
        prior = 0
        if rec is None:
            rec = self._new_ban_record(key)
        else:
            # a repeat offence counts within the recidive window after the last release
            if self._recidive.enabled and now - max(rec.last, rec.until) < self._recidive.window:
                prior = rec.count
            self._bans.move_to_end(key)
        duration = recidive_duration(base_duration, prior, self._recidive)
        rec.count = prior + 1
        rec.last = now
        rec.until = _INF if duration <= 0 else now + duration
        self._forget(key)  # counting starts afresh, as in the Go program
        self._learned.pop(key, None)  # a banned source loses its learned exemption
        ip = self._key_text(key)
        details: dict[str, Any] = {
            "events": [_EVENT_NAMES.get(kind, "")],
            "count": count,
            "user_agents": [ua] if ua else [],
        }
        if evidence:
            details.update(evidence)
        if prior:
            details["recidive"] = prior + 1
        # The firewall re-checks with its durable history (a restarted worker forgets).
        details["base_duration"] = base_duration
        details["recidive_prior"] = prior
        self._seq += 1
        self._out.append(
            BanDecision(
                id=f"{self._id_prefix}{self._seq}",
                ip=ip,
                rule=rule,
                reason=reason,
                duration=duration,
                user=user if user not in _IGNORED_USERS else "",
                user_agent=ua,
                evidence_count=count,
                evidence=details,
                event_ts=read_ts,
                worker=self._worker,
            )
        )
        self._c["decisions"] += 1

    def _kill(self, uuid: str, reason: str) -> None:
        if uuid:
            self._out.append(KillCall(uuid=uuid, reason=reason))
            self._c["kills"] += 1

    def _intern(self, value: str) -> str:
        shared = self._strings.get(value)
        if shared is None:
            self._strings.put(value, value)
            return value
        return shared

    # --- keys ----------------------------------------------------------------------------

    def _key(self, addr: IPAddress) -> int:
        if addr.version == 4:
            return int(addr)
        full = int(addr)
        key = _V6 | (full & self._v6_mask)
        if self._prefix < 128 and self._trusted_v6 and not self._prefix_is_safe(key):
            return _V6 | full  # never aggregate over a trusted network
        return key

    def _prefix_is_safe(self, key: int) -> bool:
        """True when the aggregated IPv6 prefix of `key` overlaps no trusted network."""
        safe = self._prefix_safe.get(key)
        if safe is None:
            net = ipaddress.IPv6Network((key & _ALL128 & self._v6_mask, self._prefix))
            safe = not any(net.overlaps(t) for t in self._trusted_v6)
            self._prefix_safe.put(key, safe)
        return safe

    def _key_text(self, key: int) -> str:
        if key < _V6:
            return str(ipaddress.IPv4Address(key))
        value = key & _ALL128
        if self._prefix < 128 and value == value & self._v6_mask and self._prefix_is_safe(key):
            return f"{ipaddress.IPv6Address(value)}/{self._prefix}"
        return str(ipaddress.IPv6Address(value))

    def _key_of_text(self, value: str) -> int | None:
        """Key of an address or of a prefix as the firewall reports it."""
        value = value.strip()
        try:
            if "/" not in value:
                return self._key(parse_ip(value))
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return None
        if net.prefixlen == net.max_prefixlen:
            return self._key(parse_ip(str(net.network_address)))
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen == self._prefix:
            return _V6 | int(net.network_address)
        return None

    def _wall_of(self, now: float) -> Callable[[float], str]:
        offset = self._wallclock() - now
        return lambda t: _rfc3339(t + offset)


def normalize_host(host: str) -> str:
    return rules.normalize_domain(host)


def _user_of(kind: Kind, ev: Event) -> str:
    """The account an event is about (headers are swapped in sofia events)."""
    if kind is _CHANNEL_CREATE:
        return text(ev.caller_username) or text(ev.sip_from_user)
    if kind is _WRONG_CALL_STATE:
        return text(ev.from_user_us)
    return text(ev.username) or text(ev.to_user)


def _rfc3339(wall: float) -> str:
    if not math.isfinite(wall):
        return ""
    stamp = datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")
