"""untrusted_domain: the request's domain is one of `security.untrusted_networks`' domain
patterns. Runs on sofia::register_failure (the To host) and CHANNEL_CREATE (the From
host); a call is killed."""

from __future__ import annotations

from ..events import Event, Kind
from ..evidence import Evidence
from .base import RuleBase
from .reasons import UNTRUSTED_DOMAIN, reason_call_untrusted, reason_failed_untrusted

_CHANNEL_CREATE = Kind.CHANNEL_CREATE


class UntrustedDomain(RuleBase):
    """Mixin of DetectionEngine: the untrusted_domain rule."""

    def _untrusted_domain(
        self, kind: Kind, ev: Event, ua: str, user: str, host: str, key: int, now: float,
        read_ts: float,
    ) -> bool:  # fmt: skip
        bad = self._untrusted.domain(host)
        if not bad:
            return False
        call = kind is _CHANNEL_CREATE
        return self._decide(Evidence(
            rule=UNTRUSTED_DOMAIN,
            reason=reason_call_untrusted(bad) if call else reason_failed_untrusted(bad),
            duration=self._sec.block_duration, key=key, now=now, read_ts=read_ts, ev=ev,
            kind=kind, ua=ua, user=user, details={"domain": bad},
        ))  # fmt: skip
