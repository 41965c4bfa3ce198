"""sofia::register_failure (REGISTER and INVITE): untrusted_domain (the request's domain
is untrusted), enumeration (`security.enumeration.max_distinct_users` accounts within
its window) and failed_auth (`security.max_failed_attempts` failures within
`failed_attempts_window`). Both counts live in the source's FailWindow (state.py);
the account named is the digest username of the FORBIDDEN register_attempt before."""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind, text
from ..evidence import Evidence
from ..state import IGNORED_USERS, USERS_PER_SOURCE
from ..windows import BoundedDistinct
from .base import RuleBase
from .matchers import normalize_domain
from .reasons import (
    ENUMERATION,
    FAILED_AUTH,
    UNTRUSTED_DOMAIN,
    reason_enumeration,
    reason_failed,
    reason_failed_untrusted,
)

_REGISTER_FAILURE = Kind.REGISTER_FAILURE


class FailedAuth(RuleBase):
    """Mixin of DetectionEngine: sofia::register_failure."""

    def _on_failure(self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float) -> None:
        self._c["failed_registrations"] += 1
        kind = _REGISTER_FAILURE
        ua = text(ev.user_agent)
        if self._instant(kind, ev, ua, addr, key, now, read_ts):
            return
        sec = self._sec
        host = text(ev.to_host) or text(ev.from_host) or self._default_domain
        bad = self._untrusted.domain(host)
        if bad and self._decide(Evidence(
            rule=UNTRUSTED_DOMAIN, reason=reason_failed_untrusted(bad),
            duration=sec.block_duration, key=key, now=now, read_ts=read_ts, ev=ev, kind=kind,
            ua=ua, user=text(ev.to_user), details={"domain": bad},
        )):  # fmt: skip
            return
        tr = self._track(key, now)
        win = self._more(tr).fail_window()
        user = win.pending_user or self._intern(text(ev.to_user))
        win.pending_user = ""
        users = win.seen
        if users is None:
            users = win.seen = BoundedDistinct(max(USERS_PER_SOURCE, self._enum.max_distinct_users))
        if user not in IGNORED_USERS:
            users.add(user, now)
        enum = self._enum
        if enum.enabled and enum.max_distinct_users > 0:
            distinct = users.count_since(now - enum.window)
            if distinct >= enum.max_distinct_users:
                names = users.items_since(now - enum.window)
                if self._decide(Evidence(
                    rule=ENUMERATION, reason=reason_enumeration(distinct, enum.window),
                    duration=sec.block_duration, key=key, now=now, read_ts=read_ts, ev=ev,
                    kind=kind, ua=ua, user=user, count=distinct,
                    details={"users": names, "window": enum.window},
                )):  # fmt: skip
                    return
        limit = sec.max_failed_attempts
        if limit <= 0:
            return
        n = win.hit(now, sec.failed_attempts_window, limit)
        win.note("", self._intern(normalize_domain(host)))
        if n < limit:
            return
        distinct = users.count_since(now - sec.failed_attempts_window)
        if distinct < 2 and self._whitelisted(key, now):
            return  # one misconfigured phone behind a known-good NAT
        self._decide(Evidence(
            rule=FAILED_AUTH, reason=reason_failed(limit), duration=sec.block_duration,
            key=key, now=now, read_ts=read_ts, ev=ev, kind=kind, ua=ua, user=user, count=n,
            details={
                "users": users.items_since(now - sec.failed_attempts_window),
                "domains": win.domain_list(),
                "registration_type": ev.registration_type,
                "window": sec.failed_attempts_window,
            },
        ))  # fmt: skip
