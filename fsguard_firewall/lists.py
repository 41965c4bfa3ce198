"""The firewall's lists besides bans: the manual whitelist and the untrusted patterns.

The firewall owns them (one writer), answers their control ops and broadcasts every
change to the workers as a ListChange on the PUB socket:

- whitelist: ListChange(list="whitelist", op="add"|"remove", ip=<address>, expires=<wall>)
- untrusted: ListChange(list="untrusted", op="add"|"remove", ip=<the pattern>) — the
  pattern (a domain, `*.suffix`, address or CIDR) travels in the `ip` field.

Whitelisting a banned address unbans it (kernel entry removed); a whitelisted address
cannot be banned by hand (`cannot blacklist whitelisted IP: <ip>`) nor by a rule.

The whitelist is kept in memory behind `MemoryWhitelist`; a persistent store (SQLite,
fsguard_firewall/store.py) can replace it by implementing the same four methods.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import msgspec

from shared.config import Config
from shared.control import ControlError
from shared.iputil import parse_ip
from shared.logs import escape, set_level
from shared.messages import ListChange
from shared.ops import firewall as ops
from shared.ops import firewall_lists as wire
from shared.ops.base import Empty, OpTable
from shared.ops.common import LogLevel, LogLevelRequest
from shared.ops.firewall_bans import IpRequest, StatusMessage
from shared.ops.firewall_lists import (
    DomainRequest,
    PatternAddRequest,
    PatternRequest,
    UntrustedTest,
    WhitelistAddRequest,
    WhitelistAddResult,
    WhitelistLookup,
    WhitelistRemoveRequest,
)
from shared.protected import pattern_problem
from shared.untrusted import UntrustedMatcher

from . import netwhitelist

if TYPE_CHECKING:
    from .process import Firewall

log = logging.getLogger("fsguard.firewall")

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
MAX_PATTERN_CHARS = 253
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class WhitelistEntry(msgspec.Struct, kw_only=True):
    ip: str
    added_at: float
    expires_at: float  # 0 = permanent
    user_id: str = ""
    domain: str = ""
    last_seen: float = 0.0

    @property
    def permanent(self) -> bool:
        return self.expires_at == 0

    def active(self, now: float) -> bool:
        return self.expires_at == 0 or self.expires_at > now

    def go_shape(self) -> wire.WhitelistEntry:
        """The Go program's whitelist entry; a permanent one shows Go's zero time."""
        return wire.WhitelistEntry(
            ip=self.ip,
            addedAt=rfc3339(self.added_at),
            expiresAt=rfc3339(self.expires_at) if self.expires_at else GO_ZERO_TIME,
            lastSeen=rfc3339(self.last_seen or self.added_at),
            userId=self.user_id,
            domain=self.domain,
            permanent=self.permanent,
        )


class Whitelist(Protocol):
    def put(self, entry: WhitelistEntry) -> None: ...
    def remove(self, ip: str) -> bool: ...
    def get(self, ip: str, now: float) -> WhitelistEntry | None: ...
    def active(self, now: float) -> list[WhitelistEntry]: ...


class MemoryWhitelist:
    def __init__(self) -> None:
        self._entries: dict[str, WhitelistEntry] = {}

    def put(self, entry: WhitelistEntry) -> None:
        self._entries[entry.ip] = entry

    def remove(self, ip: str) -> bool:
        return self._entries.pop(ip, None) is not None

    def get(self, ip: str, now: float) -> WhitelistEntry | None:
        entry = self._entries.get(ip)
        return entry if entry is not None and entry.active(now) else None

    def active(self, now: float) -> list[WhitelistEntry]:
        dead = [ip for ip, e in self._entries.items() if not e.active(now)]
        for ip in dead:
            del self._entries[ip]
        return list(self._entries.values())


def check_pattern(pattern: str) -> str:
    """A usable untrusted pattern (stripped), or ControlError 400."""
    text = pattern.strip()
    if not text or len(text) > MAX_PATTERN_CHARS or _CONTROL.search(text):
        raise ControlError(f"invalid untrusted pattern: {pattern!r}", 400)
    return text


class UntrustedPatterns:
    """Runtime set of untrusted patterns, seeded from `security.untrusted_networks`.

    Matching (the /test route) is the workers' matcher: domains case-insensitive,
    `*.suffix` for subdomains, addresses and CIDRs also match as network entries.
    """

    def __init__(self, initial: list[str]) -> None:
        self._patterns: dict[str, None] = {}
        for raw in initial:
            text = raw.strip()
            if text:
                self._patterns[text] = None
        self._matcher = UntrustedMatcher(self._patterns)

    def __contains__(self, pattern: str) -> bool:
        return pattern in self._patterns

    def list(self) -> list[str]:
        return list(self._patterns)

    def add(self, pattern: str) -> bool:
        if pattern in self._patterns:
            return False
        self._patterns[pattern] = None
        self._matcher = UntrustedMatcher(self._patterns)
        return True

    def remove(self, pattern: str) -> bool:
        if pattern not in self._patterns:
            return False
        del self._patterns[pattern]
        self._matcher = UntrustedMatcher(self._patterns)
        return True

    def test(self, domain: str) -> bool:
        if not domain:
            return False
        if self._matcher.domain(domain):
            return True
        try:
            return bool(self._matcher.network(parse_ip(domain)))
        except ValueError:
            return False


class ListOps:
    """Whitelist and untrusted-pattern control ops of one Firewall."""

    def __init__(
        self,
        fw: Firewall,
        whitelist: Whitelist | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fw = fw
        self.config: Config = fw.config
        self.whitelist: Whitelist = whitelist if whitelist is not None else MemoryWhitelist()
        self.untrusted = UntrustedPatterns(list(fw.config.security.untrusted_networks))
        self.clock = clock

    def bind(self, table: OpTable) -> None:
        table.bind(ops.WHITELIST, self.op_whitelist)
        table.bind(ops.WHITELIST_GET, self.op_whitelist_get)
        table.bind(ops.WHITELIST_ADD, self.op_whitelist_add)
        table.bind(ops.WHITELIST_REMOVE, self.op_whitelist_remove)
        table.bind(ops.UNTRUSTED, self.op_untrusted)
        table.bind(ops.UNTRUSTED_ADD, self.op_untrusted_add)
        table.bind(ops.UNTRUSTED_REMOVE, self.op_untrusted_remove)
        table.bind(ops.UNTRUSTED_TEST, self.op_untrusted_test)
        table.bind(ops.LOG_LEVEL, self.op_log_level)

    # --- queries used by the Firewall --------------------------------------------------

    def is_whitelisted(self, ip: str) -> bool:
        now = self.clock()
        if self.whitelist.get(ip, now) is not None:
            return True
        return netwhitelist.covering(self.whitelist.active(now), ip) is not None

    def whitelist_count(self) -> int:
        return len(self.whitelist.active(self.clock()))

    # --- whitelist ------------------------------------------------------------------------

    def op_whitelist(self, req: Empty) -> dict[str, wire.WhitelistEntry]:
        return {e.ip: e.go_shape() for e in self.whitelist.active(self.clock())}

    def op_whitelist_get(self, req: IpRequest) -> WhitelistLookup:
        ip = netwhitelist.whitelist_key(req.ip)
        entry = self.whitelist.get(ip, self.clock())
        if entry is None:  # inside a whitelisted network?
            entry = netwhitelist.covering(self.whitelist.active(self.clock()), ip)
        if entry is None:
            return WhitelistLookup(ip=ip, whitelisted=False)
        return WhitelistLookup(ip=ip, whitelisted=True, userId=entry.user_id, domain=entry.domain)

    def op_whitelist_add(self, req: WhitelistAddRequest) -> WhitelistAddResult:
        ip = netwhitelist.whitelist_key(req.ip)
        if "/" in ip:
            return netwhitelist.add_network(self, ip, req)
        user = req.userId
        domain = req.domain or self.config.freeswitch.default_domain
        permanent = req.permanent
        now = self.clock()
        ttl = netwhitelist.ttl_of(req.ttl)
        expires = 0.0 if permanent else now + (ttl or self.config.security.whitelist_ttl)
        entry = WhitelistEntry(
            ip=ip, added_at=now, expires_at=expires, user_id=user, domain=domain, last_seen=now
        )
        unbanned = self.fw.unban_covering(ip)  # a whitelisted address is not banned
        self.whitelist.put(entry)
        log.info(
            "whitelisted ip=%s user=%s domain=%s permanent=%s unbanned=%s",
            ip,
            escape(user),
            escape(domain),
            permanent,
            unbanned or "-",
        )
        self.fw.publish(ListChange(list="whitelist", op="add", ip=ip, expires=expires))
        return WhitelistAddResult(
            status="success",
            message=f"IP {ip} added to whitelist for {user}@{domain}",
            unbanned=unbanned,
        )

    def op_whitelist_remove(self, req: WhitelistRemoveRequest) -> StatusMessage:
        """Remove the manual entry; `learned: true` (the API saw a worker's learned
        entry) makes an address without a manual entry a success too."""
        ip = netwhitelist.whitelist_key(req.ip)
        removed = self.whitelist.remove(ip)
        if not removed and req.learned is not True:
            raise ControlError(f"IP {ip} not in whitelist", 404)
        log.info("removed ip=%s from whitelist", ip)
        self.fw.publish(ListChange(list="whitelist", op="remove", ip=ip))
        return StatusMessage(status="success", message=f"IP {ip} removed from whitelist")

    # --- untrusted patterns ---------------------------------------------------------------

    def op_untrusted(self, req: Empty) -> list[str]:
        return self.untrusted.list()

    def op_untrusted_add(self, req: PatternAddRequest) -> StatusMessage:
        pattern = check_pattern(req.pattern)
        problem = pattern_problem(
            pattern, self.config.security.trusted_networks, force=req.force
        )
        if problem is not None:
            raise ControlError(f"untrusted pattern refused: {problem}", 400)
        if not self.untrusted.add(pattern):
            raise ControlError(f'untrusted pattern already exists: "{pattern}"', 400)
        log.info("untrusted pattern added: %s", escape(pattern))
        self.fw.publish(ListChange(list="untrusted", op="add", ip=pattern))
        return StatusMessage(
            status="success", message=f"Pattern '{pattern}' added to untrusted networks"
        )

    def op_untrusted_remove(self, req: PatternRequest) -> StatusMessage:
        pattern = req.pattern
        if not self.untrusted.remove(pattern):
            raise ControlError(f'untrusted pattern not found: "{pattern}"', 404)
        log.info("untrusted pattern removed: %s", escape(pattern))
        self.fw.publish(ListChange(list="untrusted", op="remove", ip=pattern))
        return StatusMessage(
            status="success", message=f"Pattern '{pattern}' removed from untrusted networks"
        )

    def op_untrusted_test(self, req: DomainRequest) -> UntrustedTest:
        return UntrustedTest(domain=req.domain, isUntrusted=self.untrusted.test(req.domain))

    # --- logging ----------------------------------------------------------------------------

    def op_log_level(self, req: LogLevelRequest) -> LogLevel:
        try:
            set_level(req.level)
        except ValueError as exc:
            raise ControlError(str(exc), 400) from None
        return LogLevel(level=req.level.lower())
