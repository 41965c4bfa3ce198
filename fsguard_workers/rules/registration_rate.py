"""registration_rate: too many REGISTER exchanges from one source in
`security.rate_limit.registration_window` (sofia::pre_register / register_attempt).

One REGISTER exchange is one registration: the challenge (pre_register) counts, the
register_attempt answering it does not; an attempt with no challenge outstanding (a
reused nonce) counts. An unanswered challenge counts once. The window is the source's
Track itself (state.py): the one a spoofed flood fills.
"""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind, text, user_of
from ..evidence import Evidence
from ..state import MAX_CHALLENGES, Track
from .instant import InstantRules
from .reasons import REGISTRATION_RATE, reason_rate

_REGISTER_ATTEMPT = Kind.REGISTER_ATTEMPT


class RegistrationRate(InstantRules):
    """Mixin of DetectionEngine: sofia::pre_register and sofia::register_attempt."""

    def _on_attempt(
        self, kind: Kind, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        """Single-event rules, the FORBIDDEN account for failed_auth, the rate."""
        ua = text(ev.user_agent)
        if self._instant(kind, ev, ua, addr, key, now, read_ts):
            return
        tr: Track | None = None
        attempt = kind is _REGISTER_ATTEMPT
        if attempt and ev.auth_result == "FORBIDDEN":
            # counted once, on the register_failure that follows; remember the account
            tr = self._track(key, now)
            fail = self._more(tr).fail_window()
            fail.pending_user = self._intern(text(ev.username) or text(ev.to_user))
        rl = self._rl
        if not self._rate_on or rl.registration_limit <= 0:
            return
        if rl.whitelist_bypass and (self._whitelisted(key, now) or self._protection.why(key, now)):
            return
        if tr is None:
            tr = self._track(key, now)
        win = tr  # the registration window is the track itself
        if attempt:
            if tr.challenges:
                if win.trim(now, rl.registration_window):
                    tr.challenges -= 1  # the answer to a counted challenge
                    return
                tr.challenges = 0  # challenges older than the window: forget them
            n = win.hit(now, rl.registration_window, rl.registration_limit + 1)
        else:
            n = win.hit(now, rl.registration_window, rl.registration_limit + 1)
            if tr.challenges < MAX_CHALLENGES:
                tr.challenges += 1
        win.note(self._intern(user_of(kind, ev)), self._intern(text(ev.from_host)))
        if n > rl.registration_limit and rl.auto_block_on_exceed:
            self._decide(Evidence(
                rule=REGISTRATION_RATE, key=key, now=now, read_ts=read_ts, ev=ev, kind=kind,
                reason=reason_rate("registration", n, rl.registration_window),
                duration=rl.block_duration, ua=ua, count=n, user=user_of(kind, ev),
                details={
                    "users": win.user_list(),
                    "domains": win.domain_list(),
                    "window": rl.registration_window,
                    "events": ["sofia::pre_register", "sofia::register_attempt"],
                },
            ))  # fmt: skip
