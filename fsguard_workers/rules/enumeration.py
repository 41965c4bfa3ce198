"""user_enumeration: `security.enumeration.max_distinct_users` accounts failing from one
source within `enumeration.window` (sofia::register_failure, register_failure.py, which
keeps the distinct accounts in the source's FailWindow)."""

from __future__ import annotations

from ..events import Event, Kind
from ..evidence import Evidence
from ..windows import BoundedDistinct
from .base import RuleBase
from .reasons import ENUMERATION, reason_enumeration

_REGISTER_FAILURE = Kind.REGISTER_FAILURE


class Enumeration(RuleBase):
    """Mixin of DetectionEngine: the user_enumeration rule."""

    def _enumeration(
        self, ev: Event, ua: str, user: str, users: BoundedDistinct, key: int, now: float,
        read_ts: float,
    ) -> bool:  # fmt: skip
        enum = self._enum
        if not enum.enabled or enum.max_distinct_users <= 0:
            return False
        distinct = users.count_since(now - enum.window)
        if distinct < enum.max_distinct_users:
            return False
        return self._decide(Evidence(
            rule=ENUMERATION, reason=reason_enumeration(distinct, enum.window),
            duration=self._sec.block_duration, key=key, now=now, read_ts=read_ts, ev=ev,
            kind=_REGISTER_FAILURE, ua=ua, user=user, count=distinct,
            details={"users": users.items_since(now - enum.window), "window": enum.window},
        ))  # fmt: skip
