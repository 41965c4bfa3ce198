"""The single-event rules, in the order they run on every event of a source that is not
trusted: untrusted_network, scanner_user_agent, bare_ip (one module each). One method
per event on the hot path; the first rule that acts wins."""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind
from .bare_ip import BareIp
from .scanner_ua import ScannerUa
from .untrusted_network import UntrustedNetwork


class InstantRules(UntrustedNetwork, ScannerUa, BareIp):
    """Mixin of DetectionEngine: the rules that ban on a single event."""

    def _instant(
        self, kind: Kind, ev: Event, ua: str, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> str:
        """Returns the kill reason when one acted ("" otherwise), whether or not a
        decision was emitted (auto-block off, already banned, protected source)."""
        # each guard is the rule's cheapest "cannot apply": on the hot path, by default
        # (no untrusted networks, bare_ip off) a phone's event calls no rule at all
        if self._untrusted.has_networks and self._untrusted_network(
            kind, ev, ua, addr, key, now, read_ts
        ):
            return "untrusted-network"
        if ua and self._scanner_ua(kind, ev, ua, key, now, read_ts):
            return "scanner"
        if self._bare_on and self._bare_ip(kind, ev, ua, key, now, read_ts):
            return "bare-ip"
        return ""
