"""sofia::register (a successful registration): the source becomes protected
(protection.py) and, with `security.auto_whitelist_on_success`, learned into the
whitelist, unless it is a scanner or banned."""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind, text
from ..state import WhitelistEntry
from .instant import InstantRules
from .protection import REGISTRATION_HOLD

_REGISTER = Kind.REGISTER


class Registered(InstantRules):
    """Mixin of DetectionEngine: sofia::register."""

    def _on_register(
        self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        """Protect and whitelist the source, unless a scanner."""
        self._c["registrations"] += 1
        ua = text(ev.user_agent)
        if self._instant(_REGISTER, ev, ua, addr, key, now, read_ts) or (
            self._scanner_not_ban and self._scanner.match(ua)
        ):
            return  # a scanner that cracked a password: never protected nor whitelisted
        if self._banned(key, now):
            return
        user = text(ev.username) or text(ev.to_user)
        # held until sofia::unregister / sofia::expire, or REGISTRATION_HOLD without news
        self._protection.registered(key, user, now + REGISTRATION_HOLD)
        if not self._sec.auto_whitelist_on_success:
            return
        entry = self._learned.get(key)
        domain = text(ev.from_host) or self._default_domain
        if entry is None:
            self._learned[key] = WhitelistEntry(
                self._wallclock(), now, self._sec.whitelist_ttl, user, domain
            )
            self._c["whitelist_learned"] += 1
            if len(self._learned) > self._cap:
                self._learned.popitem(last=False)
        else:
            entry.last_seen = now
            entry.expires = now + self._sec.whitelist_ttl
            entry.user = user
            entry.domain = domain
            self._learned.move_to_end(key)
