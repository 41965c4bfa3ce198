"""Requests to the bare IP: the To / Request-URI host is an IP literal instead of a
configured SIP domain (what scanners that sweep address ranges send; FusionPBX's
Event Guard blocks them). Off by default (`security.rules.bare_ip.mode`): phones set
up with the server's address as their domain trip it. `security.bare_ip.allowed_hosts`
lists the addresses (or CIDRs) that are acceptable request hosts.

Header facts (freeswitch-real-events.md 3): in pre_register / register_attempt the
`from-host` header holds the To / Request-URI host (names are swapped); in
register_failure `to-host` is it; CHANNEL_CREATE has `variable_sip_req_host`.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.iputil import NetworkSet, parse_ip

from ..events import Event, HostEvent, Kind, text, user_of
from ..evidence import Evidence
from ..windows import BoundedCache
from .base import RuleBase
from .matchers import normalize_domain
from .reasons import clip

BARE_IP = "bare_ip"

_PRE_REGISTER = Kind.PRE_REGISTER
_REGISTER_ATTEMPT = Kind.REGISTER_ATTEMPT
_REGISTER_FAILURE = Kind.REGISTER_FAILURE
_CHANNEL_CREATE = Kind.CHANNEL_CREATE


class BareIpMatcher:
    """The request host when it is an IP literal that is not allowed, else ""."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = NetworkSet()
        for entry in allowed:
            self._allowed.add(entry)
        self._cache: BoundedCache[str, str] = BoundedCache(4096)

    def match(self, host: str) -> str:
        if not host:
            return ""
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = self._judge(host)
            self._cache.put(host, verdict)
        return verdict

    def _judge(self, host: str) -> str:
        literal = normalize_domain(host)
        if not literal or not (literal[0].isdigit() or ":" in literal):
            return ""
        try:
            addr = parse_ip(literal)
        except ValueError:
            return ""
        return "" if self._allowed.contains(addr) else str(addr)


def reason_bare_ip(host: str) -> str:
    return f'Request to the bare IP "{clip(host)}" instead of a SIP domain'


def request_host(kind: Kind, ev: Event) -> str:
    """The To / Request-URI host (sofia's pre_register/register_attempt swap the names)."""
    if kind is _CHANNEL_CREATE:
        return text(ev.sip_req_host) if isinstance(ev, HostEvent) else ""
    if kind is _REGISTER_FAILURE:
        return text(ev.to_host)
    if kind is _PRE_REGISTER or kind is _REGISTER_ATTEMPT:
        return text(ev.from_host)
    return ""


class BareIp(RuleBase):
    """Mixin of DetectionEngine: the bare_ip rule (single event, instant.py)."""

    def _bare_ip(
        self, kind: Kind, ev: Event, ua: str, key: int, now: float, read_ts: float
    ) -> bool:
        host = request_host(kind, ev)
        literal = self._bare.match(host) if host else ""
        return bool(literal) and self._decide(Evidence(
            rule=BARE_IP, reason=reason_bare_ip(literal),
            duration=self._sec.block_duration, key=key, now=now, read_ts=read_ts,
            ev=ev, kind=kind, ua=ua, user=user_of(kind, ev), details={"host": literal},
        ))  # fmt: skip
