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
from typing import Any

from shared.config import Config
from shared.iputil import IPAddress, NetworkSet, parse_ip
from shared.logs import LogRateLimiter
from shared.messages import BanDecision, KillCall, ListChange
from shared.recidive import recidive_duration

from . import rules
from .events import (
    DecodeFailure,
    Event,
    EventDecoder,
    HostEvent,
    Kind,
    freeswitch_time,
    is_forged,
    kind_of,
    relevant_label,
    text,
)
from .events import maybe_relevant as _maybe_relevant
from .keys import ALL128 as _ALL128
from .keys import SourceKeys
from .netlist import NetworkWhitelist
from .repair import needs_checks
from .rules.modes import BAN, OFF, Modes, Simulations
from .rules.protection import REGISTRATION_HOLD, Protection, spoofable
from .snapshots import Snapshots, _rfc3339
from .state import IGNORED_USERS as _IGNORED_USERS
from .state import (
    MAX_CHALLENGES,
    USERS_PER_SOURCE,
    BanRecord,
    MoreWindows,
    Track,
    WhitelistEntry,
)
from .windows import BoundedCache, BoundedDistinct

log = logging.getLogger(__name__)

TICK_BUDGET = 2048  # tracked sources examined per tick() (~0.5 ms; 20k/s at 10 ticks/s)
SWEEP_BUDGET = 64  # ban / whitelist entries examined per tick()
LRU_SLACK = 4096  # stale LRU entries tolerated beyond the number of tracked sources

_INF = math.inf

_PRE_REGISTER = Kind.PRE_REGISTER
_REGISTER_ATTEMPT = Kind.REGISTER_ATTEMPT
_REGISTER = Kind.REGISTER
_REGISTER_FAILURE = Kind.REGISTER_FAILURE
_WRONG_CALL_STATE = Kind.WRONG_CALL_STATE
_CHANNEL_CREATE = Kind.CHANNEL_CREATE
_HANGUP = Kind.HANGUP
_UNREGISTER = Kind.UNREGISTER
_OTHER = Kind.OTHER

_EVENT_NAMES = {
    Kind.PRE_REGISTER: "sofia::pre_register",
    Kind.REGISTER_ATTEMPT: "sofia::register_attempt",
    Kind.REGISTER: "sofia::register",
    Kind.REGISTER_FAILURE: "sofia::register_failure",
    Kind.WRONG_CALL_STATE: "sofia::wrong_call_state",
    Kind.CHANNEL_CREATE: "CHANNEL_CREATE",
    Kind.HANGUP: "CHANNEL_HANGUP_COMPLETE",
}

Output = BanDecision | KillCall


class DetectionEngine(SourceKeys, Snapshots):
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
        # the bare_ip rule reads one more header: decoded only when it runs
        bare = sec.rules.mode_of(rules.BARE_IP) != OFF
        self._decoder = EventDecoder(HostEvent if bare else Event)
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
        self._modes = Modes(sec.rules)
        on = self._modes.active
        self._scanner = rules.ScannerMatcher(sec.scanner_user_agents)  # gated by mode in _ban
        # in ban mode a scanner's registration never gets past _instant: no second match
        self._scanner_not_ban = self._modes[rules.SCANNER_UA] != BAN
        self._untrusted = rules.UntrustedMatcher(sec.untrusted_networks)
        self._toll = rules.TollFraudMatcher(sec.toll_fraud)
        self._toll.enabled = self._toll.enabled and on(rules.TOLL_FRAUD)
        self._bare = rules.BareIpMatcher(sec.bare_ip.allowed_hosts)
        self._bare_on = on(rules.BARE_IP)
        self._ext = sec.extension_scan
        self._ext_cause = rules.CauseMatcher(self._ext.hangup_causes)
        self._ext_on = on(rules.EXTENSION_SCAN)

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
        # A track without `more` holds only the registration-rate window (the Track
        # itself): it is forgotten once that window has passed, so a spoofed flood's
        # state goes away after registration_window, not after the longest window.
        self._plain_idle_after = self._rl.registration_window
        self._idle_after = max(
            sec.failed_attempts_window,
            sec.wrong_call_state_window,
            self._enum.window if self._enum.enabled else 0.0,
            self._rl.registration_window,
            self._rl.call_rate_interval,
            self._ext.window if self._ext_on else 0.0,
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
        self._protection = Protection(self._cap)
        self._sims = Simulations(self._cap)
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
                # issue 12
                "spoofing_suspected",
                "simulated",
                "extension_scan_calls",
            ),
            0,
        )
        self._spoofing_by_rule: dict[str, int] = {}
        self._spoof_log = LogRateLimiter(10.0)
        self._untrusted_entries: list[str] = list(sec.untrusted_networks)

    # --- public interface ----------------------------------------------------------

    def handle(self, body: bytes, read_ts: float, label: bytes | None = None) -> None:
        """Decode one raw JSON event body and run the rules. Never raises. `label`:
        the body's events.event_label when the caller has it (saves a scan)."""
        c = self._c
        c["processed"] += 1
        if not (_maybe_relevant(body) if label is None else relevant_label(label)):
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

    def set_gateways(self, addresses: list[str]) -> int:
        """The FreeSWITCH gateways' addresses (protected sources); returns how many parsed."""
        keys = [k for k in map(self._key_of_text, addresses) if k is not None]
        self._protection.set_gateways(keys, addresses)
        return len(keys)

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
        data.update({f"protected_{k}": v for k, v in self._protection.counts().items()})
        return data

    def rule_stats(self) -> dict[str, dict[str, int]]:
        """Per-rule counters that are not decisions sent to the firewall."""
        return {
            "simulated_by_rule": dict(self._sims.by_rule),
            "spoofing_by_rule": dict(self._spoofing_by_rule),
        }

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
        elif kind is _HANGUP:
            self._on_hangup(ev, addr, key, now, read_ts)
        elif kind is _UNREGISTER:
            self._protection.unregistered(key, text(ev.username) or text(ev.to_user))
        else:
            self._on_attempt(kind, ev, addr, key, now, read_ts)

    def _instant(
        self, kind: Kind, ev: Event, ua: str, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> str:
        """Rules that ban on a single event: untrusted source network, scanner UA, bare IP.

        Returns the kill reason when one acted ("" otherwise), whether or not a
        decision was emitted (auto-block off, already banned, protected source).
        """
        untrusted = self._untrusted
        if untrusted.has_networks:
            net = untrusted.network(addr)
            if net and self._ban(
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
            ):
                return "untrusted-network"
        if ua:
            pattern = self._scanner.match(ua)
            if pattern and self._ban(
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
            ):
                return "scanner"
        if self._bare_on:
            host = _request_host(kind, ev)
            literal = self._bare.match(host) if host else ""
            if literal and self._ban(
                key,
                addr,
                rules.BARE_IP,
                rules.reason_bare_ip(literal),
                self._sec.block_duration,
                now,
                read_ts,
                ev,
                kind,
                ua=ua,
                user=_user_of(kind, ev),
                evidence={"host": literal},
            ):
                return "bare-ip"
        return ""

    def _on_attempt(
        self, kind: Kind, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        """sofia::pre_register / register_attempt: scanners and the registration rate.

        One REGISTER exchange is one registration: the challenge (pre_register) counts,
        the register_attempt answering it does not; an attempt with no challenge
        outstanding (a reused nonce) counts. An unanswered challenge counts once.
        """
        ua = text(ev.user_agent)
        if self._instant(kind, ev, ua, addr, key, now, read_ts):
            return
        tr: Track | None = None
        attempt = kind is _REGISTER_ATTEMPT
        if attempt and ev.auth_result == "FORBIDDEN":
            # counted once, on the register_failure that follows; remember the account
            tr = self._track(key, now)
            fail = self._more(tr).fail_window()
            fail.pending_user = self._intern(text(ev.username) or text(ev.to_user))
        rl = self._rl
        if not self._rate_on or rl.registration_limit <= 0:
            return
        if rl.whitelist_bypass and (
            self._whitelisted(key, now) or self._protection.why(key, now)
        ):
            return
        if tr is None:
            tr = self._track(key, now)
        win = tr  # the registration window is the track itself
        if attempt:
            if tr.challenges:
                if win.trim(now, rl.registration_window):
                    tr.challenges -= 1  # the answer to a counted challenge
                    return
                tr.challenges = 0  # challenges older than the window: forget them
            n = win.hit(now, rl.registration_window, rl.registration_limit + 1)
        else:
            n = win.hit(now, rl.registration_window, rl.registration_limit + 1)
            if tr.challenges < MAX_CHALLENGES:
                tr.challenges += 1
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
        """sofia::register (success): protect and whitelist the source, unless a scanner."""
        self._c["registrations"] += 1
        ua = text(ev.user_agent)
        if self._instant(_REGISTER, ev, ua, addr, key, now, read_ts) or (
            self._scanner_not_ban and self._scanner.match(ua)
        ):
            return  # a scanner that cracked a password: never protected nor whitelisted
        if self._banned(key, now):
            return
        user = text(ev.username) or text(ev.to_user)
        # held until sofia::unregister / sofia::expire, or REGISTRATION_HOLD without news
        self._protection.registered(key, user, now + REGISTRATION_HOLD)
        if not self._sec.auto_whitelist_on_success:
            return
        entry = self._learned.get(key)
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

    def _on_hangup(self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float) -> None:
        """CHANNEL_HANGUP_COMPLETE of a sofia leg: extension scanning."""
        if not self._ext_on or not ev.sip_network_ip or not self._ext_cause(ev.hangup_cause):
            return
        self._c["extension_scan_calls"] += 1
        ext = self._ext
        tr = self._track(key, now)
        win = self._more(tr).ext_window()
        n = win.hit(now, ext.window, ext.max_failed_calls)
        destination = self._intern(text(ev.destination))
        win.note(destination, "")
        if n < ext.max_failed_calls:
            return
        self._ban(
            key,
            addr,
            rules.EXTENSION_SCAN,
            rules.reason_extension_scan(n, ext.window),
            self._sec.block_duration,
            now,
            read_ts,
            ev,
            _HANGUP,
            ua=text(ev.sip_user_agent),
            user=_user_of(_HANGUP, ev),
            count=n,
            evidence={
                "destinations": win.user_list(),
                "hangup_cause": ev.hangup_cause,
                "window": ext.window,
            },
        )

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
        if bad and self._ban(
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
        ):
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
                if self._ban(
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
                ):
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
        if self._toll.match(
            ev.sofia_profile, ev.caller_context, destination, ev.sip_authorized
        ) and self._ban(
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
        ):
            self._kill(uuid, "toll-fraud")
            return
        why = self._instant(kind, ev, ua, addr, key, now, read_ts)
        if why:
            self._kill(uuid, why)
            return
        from_host = text(ev.sip_from_host)
        bad = self._untrusted.domain(from_host)
        if bad and self._ban(
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
        ):
            self._kill(uuid, "untrusted-domain")
            return
        rl = self._rl
        if not self._rate_on or rl.call_rate_limit <= 0:
            return
        if rl.whitelist_bypass and (
            self._whitelisted(key, now) or self._protection.why(key, now)
        ):
            return
        tr = self._track(key, now)
        win = self._more(tr).call_window()
        n = win.hit(now, rl.call_rate_interval, rl.call_rate_limit + 1)
        win.note(self._intern(user), self._intern(from_host))
        if n <= rl.call_rate_limit:
            return
        if not rl.auto_block_on_exceed:
            if self._modes[rules.CALL_RATE] == BAN:
                self._kill(uuid, "rate-limited")
            return
        if self._ban(
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
        ):
            self._kill(uuid, "rate-limited")

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
    ) -> bool:
        """Emit one decision per crossing: nothing while a ban of the key is active.

        Returns whether the rule acts (the caller kills the call): False when the rule
        is off or simulated; True otherwise, even when no decision is emitted (auto-block
        off, already banned, a protected source behind a spoofable event).
        """
        mode = self._modes[rule]
        if mode == OFF:
            return False
        if spoofable(kind, ev):
            why = self._protected(key, now)
            if why:
                self._suspect_spoofing(rule, key, why, kind, ua)
                return True
        if mode != BAN:
            self._simulate(key, rule, reason, base_duration, now, read_ts, kind, ua, user, count)
            return False
        if not self._sec.auto_block_enabled:
            self._c["suppressed"] += 1
            return True
        rec = self._bans.get(key)
        if rec is not None and rec.until > now:
            return True
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
                fs_ts=freeswitch_time(ev),
                decided_ts=self._wallclock(),
                worker=self._worker,
            )
        )
        self._c["decisions"] += 1
        return True

    def _protected(self, key: int, now: float) -> str:
        why = self._protection.why(key, now)
        if why:
            return why
        until = self._manual.get(key)
        return "whitelist" if until is not None and until > now else ""

    def _suspect_spoofing(self, rule: str, key: int, why: str, kind: Kind, ua: str) -> None:
        """A single unauthenticated event against a protected source: counted and logged."""
        self._c["spoofing_suspected"] += 1
        by_rule = self._spoofing_by_rule
        by_rule[rule] = by_rule.get(rule, 0) + 1
        if self._spoof_log.allow(rule):
            log.warning(
                "suspected spoofing: %s on %s from protected source %s (%s): not banned",
                rule, _EVENT_NAMES.get(kind, ""), self._key_text(key), why,
            )  # fmt: skip

    def _simulate(
        self,
        key: int,
        rule: str,
        reason: str,
        duration: float,
        now: float,
        read_ts: float,
        kind: Kind,
        ua: str,
        user: str,
        count: int,
    ) -> None:
        """A simulated rule's decision: recorded and emitted as source="simulated" (the
        worker logs and audits it, never sends it to the firewall)."""
        sims = self._sims
        if sims.active(key, rule, now):
            return
        until = _INF if duration <= 0 else now + duration
        ip = self._key_text(key)
        self._seq += 1
        decision = BanDecision(
            id=f"{self._id_prefix}{self._seq}",
            ip=ip,
            rule=rule,
            reason=reason,
            duration=duration,
            user=user if user not in _IGNORED_USERS else "",
            user_agent=ua,
            evidence_count=count,
            evidence={"events": [_EVENT_NAMES.get(kind, "")], "simulated": True},
            source="simulated",
            event_ts=read_ts,
            worker=self._worker,
        )
        sims.record(key, rule, until, {
            "ip": ip, "rule": rule, "reason": reason, "duration": duration,
            "user": decision.user, "userAgent": ua, "count": count,
            "time": _rfc3339(self._wallclock()), "simulated": True,
        })  # fmt: skip
        self._c["simulated"] += 1
        self._out.append(decision)

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


def normalize_host(host: str) -> str:
    return rules.normalize_domain(host)


def _request_host(kind: Kind, ev: Event) -> str:
    """The To / Request-URI host (sofia's pre_register/register_attempt swap the names)."""
    if kind is _CHANNEL_CREATE:
        return text(ev.sip_req_host) if isinstance(ev, HostEvent) else ""
    if kind is _REGISTER_FAILURE:
        return text(ev.to_host)
    if kind is _PRE_REGISTER or kind is _REGISTER_ATTEMPT:
        return text(ev.from_host)
    return ""


def _user_of(kind: Kind, ev: Event) -> str:
    """The account an event is about (headers are swapped in sofia events)."""
    if kind is _CHANNEL_CREATE or kind is _HANGUP:
        return text(ev.caller_username) or text(ev.sip_from_user)
    if kind is _WRONG_CALL_STATE:
        return text(ev.from_user_us)
    return text(ev.username) or text(ev.to_user)
