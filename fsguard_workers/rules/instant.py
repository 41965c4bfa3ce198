"""The single-event rules: untrusted_network (the source is in an untrusted network),
scanner_ua (a scanner's User-Agent) and bare_ip (the request host is an IP literal).

They run first on every event of a source that is not trusted, in one method (one call
per event on the hot path); their matchers are in matchers.py and bare_ip.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.iputil import IPAddress

from ..events import Event, HostEvent, Kind, text, user_of
from ..evidence import Evidence
from .bare_ip import BARE_IP, reason_bare_ip
from .base import RuleBase
from .reasons import (
    SCANNER_UA,
    UNTRUSTED_NETWORK,
    reason_scanner,
    reason_untrusted_network,
)

_PRE_REGISTER = Kind.PRE_REGISTER
_REGISTER_ATTEMPT = Kind.REGISTER_ATTEMPT
_REGISTER_FAILURE = Kind.REGISTER_FAILURE
_CHANNEL_CREATE = Kind.CHANNEL_CREATE


# A single-event finding: rule, reason, details, kill reason, whether it names the user.
_Hit = tuple[str, str, dict[str, Any], str, bool]


class InstantRules(RuleBase):
    """Mixin of DetectionEngine: the rules that ban on a single event."""

    def _instant(
        self, kind: Kind, ev: Event, ua: str, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> str:
        """Returns the kill reason when one acted ("" otherwise), whether or not a
        decision was emitted (auto-block off, already banned, protected source)."""
        for rule, reason, details, kill, names_user in self._instant_hits(kind, ev, ua, addr):
            if self._decide(Evidence(
                rule=rule, reason=reason, duration=self._sec.block_duration, key=key, now=now,
                read_ts=read_ts, ev=ev, kind=kind, ua=ua,
                user=user_of(kind, ev) if names_user else "", details=details,
            )):  # fmt: skip
                return kill
        return ""

    def _instant_hits(self, kind: Kind, ev: Event, ua: str, addr: IPAddress) -> Iterator[_Hit]:
        """What each single-event rule finds, in order; a rule is only looked at when the
        one before it found nothing or did not act (off or simulated)."""
        untrusted = self._untrusted
        if untrusted.has_networks:
            net = untrusted.network(addr)
            if net:
                yield (UNTRUSTED_NETWORK, reason_untrusted_network(net), {"network": net},
                       "untrusted-network", False)  # fmt: skip
        if ua:
            pattern = self._scanner.match(ua)
            if pattern:
                yield SCANNER_UA, reason_scanner(ua), {"pattern": pattern}, "scanner", True
        if self._bare_on:
            host = request_host(kind, ev)
            literal = self._bare.match(host) if host else ""
            if literal:
                yield BARE_IP, reason_bare_ip(literal), {"host": literal}, "bare-ip", True


def request_host(kind: Kind, ev: Event) -> str:
    """The To / Request-URI host (sofia's pre_register/register_attempt swap the names)."""
    if kind is _CHANNEL_CREATE:
        return text(ev.sip_req_host) if isinstance(ev, HostEvent) else ""
    if kind is _REGISTER_FAILURE:
        return text(ev.to_host)
    if kind is _PRE_REGISTER or kind is _REGISTER_ATTEMPT:
        return text(ev.from_host)
    return ""
