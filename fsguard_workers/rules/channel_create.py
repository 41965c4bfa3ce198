"""CHANNEL_CREATE: the rules that see a new call, in this order: a banned source's call
is killed; toll_fraud; the single-event rules (instant.py); untrusted_domain (the
caller's From host); call_rate. A rule that acts kills the call."""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind, text, user_of
from .call_rate import CallRate
from .instant import InstantRules
from .toll_fraud import TollFraud
from .untrusted_domain import UntrustedDomain

_CHANNEL_CREATE = Kind.CHANNEL_CREATE


class ChannelCreate(TollFraud, InstantRules, UntrustedDomain, CallRate):
    """Mixin of DetectionEngine: CHANNEL_CREATE."""

    def _on_channel_create(
        self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        kind = _CHANNEL_CREATE
        uuid = ev.unique_id
        if self._banned(key, now):
            self._kill(uuid, "banned")
            return
        ua = text(ev.sip_user_agent)
        user = user_of(kind, ev)
        if self._toll_fraud(ev, ua, user, text(ev.destination), key, now, read_ts):
            self._kill(uuid, "toll-fraud")
            return
        why = self._instant(kind, ev, ua, addr, key, now, read_ts)
        if why:
            self._kill(uuid, why)
            return
        from_host = text(ev.sip_from_host)
        if self._untrusted_domain(kind, ev, ua, user, from_host, key, now, read_ts):
            self._kill(uuid, "untrusted-domain")
            return
        if self._call_rate(ev, ua, user, from_host, key, now, read_ts):
            self._kill(uuid, "rate-limited")
