"""failed_auth: `security.max_failed_attempts` failed authentications from one source
within `failed_attempts_window` (sofia::register_failure, register_failure.py), counted
in the source's FailWindow. A single account failing behind a whitelisted address (one
misconfigured phone behind a known-good NAT) is not banned."""

from __future__ import annotations

from ..events import Event, Kind
from ..evidence import Evidence
from ..state import FailWindow
from ..windows import BoundedDistinct
from .base import RuleBase
from .matchers import normalize_domain
from .reasons import FAILED_AUTH, reason_failed

_REGISTER_FAILURE = Kind.REGISTER_FAILURE


class FailedAuth(RuleBase):
    """Mixin of DetectionEngine: the failed_auth rule."""

    def _failed_auth(
        self, ev: Event, ua: str, user: str, host: str, win: FailWindow, users: BoundedDistinct,
        key: int, now: float, read_ts: float,
    ) -> None:  # fmt: skip
        sec = self._sec
        limit = sec.max_failed_attempts
        if limit <= 0:
            return
        n = win.hit(now, sec.failed_attempts_window, limit)
        win.note("", self._intern(normalize_domain(host)))
        if n < limit:
            return
        distinct = users.count_since(now - sec.failed_attempts_window)
        if distinct < 2 and self._whitelisted(key, now):
            return
        self._decide(Evidence(
            rule=FAILED_AUTH, reason=reason_failed(limit), duration=sec.block_duration,
            key=key, now=now, read_ts=read_ts, ev=ev, kind=_REGISTER_FAILURE, ua=ua, user=user,
            count=n,
            details={
                "users": users.items_since(now - sec.failed_attempts_window),
                "domains": win.domain_list(),
                "registration_type": ev.registration_type,
                "window": sec.failed_attempts_window,
            },
        ))  # fmt: skip
