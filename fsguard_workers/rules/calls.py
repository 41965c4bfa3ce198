"""CHANNEL_CREATE: the rules that see a new call, in this order: a banned source's call
is killed; toll_fraud (an unauthenticated call to a fraud destination,
`security.toll_fraud`, matchers.py); the single-event rules (instant.py);
untrusted_domain (the caller's From host); call_rate (`security.rate_limit.call_rate_*`
calls from one source per interval, counted in the source's call window). A rule that
acts kills the call."""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind, text, user_of
from ..evidence import Evidence
from .base import RuleBase
from .modes import BAN
from .reasons import (
    CALL_RATE,
    TOLL_FRAUD,
    UNTRUSTED_DOMAIN,
    reason_call_untrusted,
    reason_rate,
    reason_toll_fraud,
)

_CHANNEL_CREATE = Kind.CHANNEL_CREATE


class CallRules(RuleBase):
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
        destination = text(ev.destination)
        user = user_of(kind, ev)
        sec = self._sec
        if self._toll.match(
            ev.sofia_profile, ev.caller_context, destination, ev.sip_authorized
        ) and self._decide(Evidence(
            rule=TOLL_FRAUD, duration=sec.block_duration, key=key, now=now, read_ts=read_ts,
            reason=reason_toll_fraud(destination, ev.sofia_profile, ev.caller_context),
            ev=ev, kind=kind, ua=ua, user=user,
            details={
                "destination": destination,
                "profile": ev.sofia_profile,
                "context": ev.caller_context,
            },
        )):  # fmt: skip
            self._kill(uuid, "toll-fraud")
            return
        why = self._instant(kind, ev, ua, addr, key, now, read_ts)
        if why:
            self._kill(uuid, why)
            return
        from_host = text(ev.sip_from_host)
        bad = self._untrusted.domain(from_host)
        if bad and self._decide(Evidence(
            rule=UNTRUSTED_DOMAIN, reason=reason_call_untrusted(bad),
            duration=sec.block_duration, key=key, now=now, read_ts=read_ts, ev=ev, kind=kind,
            ua=ua, user=user, details={"domain": bad},
        )):  # fmt: skip
            self._kill(uuid, "untrusted-domain")
            return
        rl = self._rl
        if not self._rate_on or rl.call_rate_limit <= 0:
            return
        if rl.whitelist_bypass and (self._whitelisted(key, now) or self._protection.why(key, now)):
            return
        tr = self._track(key, now)
        win = self._more(tr).call_window()
        n = win.hit(now, rl.call_rate_interval, rl.call_rate_limit + 1)
        win.note(self._intern(user), self._intern(from_host))
        if n <= rl.call_rate_limit:
            return
        if not rl.auto_block_on_exceed:
            if self._modes[CALL_RATE] == BAN:
                self._kill(uuid, "rate-limited")
            return
        if self._decide(Evidence(
            rule=CALL_RATE, reason=reason_rate("call", n, rl.call_rate_interval),
            duration=rl.block_duration, key=key, now=now, read_ts=read_ts, ev=ev, kind=kind,
            ua=ua, user=user, count=n,
            details={
                "users": win.user_list(),
                "domains": win.domain_list(),
                "window": rl.call_rate_interval,
            },
        )):  # fmt: skip
            self._kill(uuid, "rate-limited")
