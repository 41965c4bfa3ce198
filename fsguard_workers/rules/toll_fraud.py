"""toll_fraud: an unauthenticated call on a watched profile or context to a denied
prefix (`security.toll_fraud`, matchers.TollFraudMatcher). Runs on CHANNEL_CREATE, first
(channel_create.py); the call is killed."""

from __future__ import annotations

from ..events import Event, Kind
from ..evidence import Evidence
from .base import RuleBase
from .reasons import TOLL_FRAUD, reason_toll_fraud

_CHANNEL_CREATE = Kind.CHANNEL_CREATE


class TollFraud(RuleBase):
    """Mixin of DetectionEngine: the toll_fraud rule."""

    def _toll_fraud(
        self, ev: Event, ua: str, user: str, destination: str, key: int, now: float, read_ts: float
    ) -> bool:
        profile, context = ev.sofia_profile, ev.caller_context
        if not self._toll.match(profile, context, destination, ev.sip_authorized):
            return False
        return self._decide(Evidence(
            rule=TOLL_FRAUD, duration=self._sec.block_duration, key=key, now=now,
            read_ts=read_ts, reason=reason_toll_fraud(destination, profile, context),
            ev=ev, kind=_CHANNEL_CREATE, ua=ua, user=user,
            details={"destination": destination, "profile": profile, "context": context},
        ))  # fmt: skip
