"""sofia::register_failure (REGISTER and INVITE), in this order: the single-event rules
(instant.py); untrusted_domain (the request's domain); user_enumeration; failed_auth.
The account named is the digest username of the FORBIDDEN register_attempt before
(registration_rate.py leaves it in the FailWindow), else the To user; the distinct
accounts both counting rules read are kept here, in the source's FailWindow (state.py)."""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind, text
from ..state import IGNORED_USERS, USERS_PER_SOURCE
from ..windows import BoundedDistinct
from .enumeration import Enumeration
from .failed_auth import FailedAuth
from .instant import InstantRules
from .untrusted_domain import UntrustedDomain

_REGISTER_FAILURE = Kind.REGISTER_FAILURE


class RegisterFailure(InstantRules, UntrustedDomain, Enumeration, FailedAuth):
    """Mixin of DetectionEngine: sofia::register_failure."""

    def _on_failure(self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float) -> None:
        self._c["failed_registrations"] += 1
        kind = _REGISTER_FAILURE
        ua = text(ev.user_agent)
        if self._instant(kind, ev, ua, addr, key, now, read_ts):
            return
        host = text(ev.to_host) or text(ev.from_host) or self._default_domain
        if self._untrusted_domain(kind, ev, ua, text(ev.to_user), host, key, now, read_ts):
            return
        win = self._more(self._track(key, now)).fail_window()
        user = win.pending_user or self._intern(text(ev.to_user))
        win.pending_user = ""
        users = win.seen
        if users is None:
            users = win.seen = BoundedDistinct(max(USERS_PER_SOURCE, self._enum.max_distinct_users))
        if user not in IGNORED_USERS:
            users.add(user, now)
        if self._enumeration(ev, ua, user, users, key, now, read_ts):
            return
        self._failed_auth(ev, ua, user, host, win, users, key, now, read_ts)
