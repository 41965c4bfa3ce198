"""The per-shard detection engine: decoded events in, ban decisions and call kills out.

The engine decodes an event, drops what no rule reads (irrelevant, forged, trusted or
whitelisted sources) and dispatches by event kind to the rules; it owns the shared
per-source state and the output. Where things live:

- the rules, one module per event they read (rules/): instant.py (untrusted_network,
  scanner_ua, bare_ip, on every event), registration_rate.py, registered.py
  (protection and learned whitelist), failed_auth.py (untrusted_domain, enumeration,
  failed_auth), wrong_call_state.py, calls.py (toll_fraud, untrusted_domain,
  call_rate), extension_scan.py;
- the per-source state and its bounded expiry: tracking.py (see its "Memory" notes),
  state.py (the objects), keys.py (an int per source);
- the output: evidence.py (what a rule found), decisions.py (mode, recidive,
  BanDecision, KillCall);
- the read side (Go snapshot endpoints): snapshots.py.

The rules are mixins of DetectionEngine, so an event costs the same calls as when they
were methods of one class.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from shared.config import Config
from shared.iputil import IPAddress, NetworkSet, parse_ip
from shared.logs import LogRateLimiter
from shared.messages import ListChange

from . import rules
from .decisions import Decisions, Output
from .events import (
    DecodeFailure,
    Event,
    EventDecoder,
    HostEvent,
    Kind,
    is_forged,
    kind_of,
    relevant_label,
    text,
)
from .events import maybe_relevant as _maybe_relevant
from .keys import ALL128 as _ALL128
from .netlist import NetworkWhitelist
from .repair import MAX_BODY
from .rules.channel_create import ChannelCreate
from .rules.extension_scan import ExtensionScan
from .rules.modes import BAN, OFF, Modes, Simulations
from .rules.protection import Protection
from .rules.register_failure import RegisterFailure
from .rules.registered import Registered
from .rules.registration_rate import RegistrationRate
from .rules.wrong_call_state import WrongCallState
from .snapshots import Snapshots
from .state import BanRecord, Track, WhitelistEntry
from .tracking import LRU_SLACK, SWEEP_BUDGET, TICK_BUDGET
from .windows import BoundedCache

__all__ = ["LRU_SLACK", "SWEEP_BUDGET", "TICK_BUDGET", "DetectionEngine", "Output"]

log = logging.getLogger(__name__)

_INF = math.inf

_REGISTER = Kind.REGISTER
_REGISTER_FAILURE = Kind.REGISTER_FAILURE
_WRONG_CALL_STATE = Kind.WRONG_CALL_STATE
_CHANNEL_CREATE = Kind.CHANNEL_CREATE
_HANGUP = Kind.HANGUP
_UNREGISTER = Kind.UNREGISTER
_OTHER = Kind.OTHER


class DetectionEngine(
    Registered,
    RegistrationRate,
    RegisterFailure,
    WrongCallState,
    ChannelCreate,
    ExtensionScan,
    Decisions,
    Snapshots,
):
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
        self._scanner = rules.ScannerMatcher(sec.scanner_user_agents)  # gated by mode in _decide
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
            if len(body) > MAX_BODY:  # checked before decoding (the ESL reader caps it too)
                raise DecodeFailure
            # Nesting: counting brackets cost 7% of a worker's CPU, so the fast path relies on
            # msgspec's own recursion guard (a RecursionError, caught here); the slow path then
            # applies the depth limit before any repair, and counts the refusal.
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
