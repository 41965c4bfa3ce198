"""untrusted_network: the source address is inside one of `security.untrusted_networks`
(or a pattern added at run time). Bans on the first event of any kind (instant.py)."""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind
from ..evidence import Evidence
from .base import RuleBase
from .reasons import UNTRUSTED_NETWORK, reason_untrusted_network


class UntrustedNetwork(RuleBase):
    """Mixin of DetectionEngine: the untrusted_network rule."""

    def _untrusted_network(
        self, kind: Kind, ev: Event, ua: str, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> bool:
        net = self._untrusted.network(addr)
        return bool(net) and self._decide(Evidence(
            rule=UNTRUSTED_NETWORK, reason=reason_untrusted_network(net),
            duration=self._sec.block_duration, key=key, now=now, read_ts=read_ts,
            ev=ev, kind=kind, ua=ua, details={"network": net},
        ))  # fmt: skip
