"""call_rate: more than `security.rate_limit.call_rate_limit` calls from one source per
`call_rate_interval`, counted in the source's call window on CHANNEL_CREATE
(channel_create.py). Over the limit the call is killed; banned with
`auto_block_on_exceed`."""

from __future__ import annotations

from ..events import Event, Kind
from ..evidence import Evidence
from .base import RuleBase
from .modes import BAN
from .reasons import CALL_RATE, reason_rate

_CHANNEL_CREATE = Kind.CHANNEL_CREATE


class CallRate(RuleBase):
    """Mixin of DetectionEngine: the call_rate rule."""

    def _call_rate(
        self, ev: Event, ua: str, user: str, from_host: str, key: int, now: float, read_ts: float
    ) -> bool:
        """True when the call must be killed (over the limit)."""
        rl = self._rl
        if not self._rate_on or rl.call_rate_limit <= 0:
            return False
        if rl.whitelist_bypass and (self._whitelisted(key, now) or self._protection.why(key, now)):
            return False
        win = self._more(self._track(key, now)).call_window()
        n = win.hit(now, rl.call_rate_interval, rl.call_rate_limit + 1)
        win.note(self._intern(user), self._intern(from_host))
        if n <= rl.call_rate_limit:
            return False
        if not rl.auto_block_on_exceed:
            return self._modes[CALL_RATE] == BAN
        return self._decide(Evidence(
            rule=CALL_RATE, reason=reason_rate("call", n, rl.call_rate_interval),
            duration=rl.block_duration, key=key, now=now, read_ts=read_ts, ev=ev,
            kind=_CHANNEL_CREATE, ua=ua, user=user, count=n,
            details={
                "users": win.user_list(),
                "domains": win.domain_list(),
                "window": rl.call_rate_interval,
            },
        ))  # fmt: skip
