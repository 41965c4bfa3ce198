"""wrong_call_state: `security.max_wrong_call_states` sofia::wrong_call_state events
(an abandoned challenged INVITE) from one source within `wrong_call_state_window`."""

from __future__ import annotations

from shared.iputil import IPAddress

from ..events import Event, Kind, text
from ..evidence import Evidence
from .instant import InstantRules
from .reasons import WRONG_CALL_STATE, reason_wrong_call_state

_WRONG_CALL_STATE = Kind.WRONG_CALL_STATE


class WrongCallState(InstantRules):
    """Mixin of DetectionEngine: sofia::wrong_call_state."""

    def _on_wrong_call_state(
        self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float
    ) -> None:
        self._c["wrong_call_states"] += 1
        kind = _WRONG_CALL_STATE
        if self._instant(kind, ev, "", addr, key, now, read_ts):
            return
        sec = self._sec
        limit = sec.max_wrong_call_states
        if limit <= 0:
            return
        tr = self._track(key, now)
        win = self._more(tr).wcs_window()
        n = win.hit(now, sec.wrong_call_state_window, limit)
        user = self._intern(text(ev.from_user_us))
        win.note(user, "")
        if n < limit:
            return
        if len(win.user_list()) < 2 and self._whitelisted(key, now):
            return
        self._decide(Evidence(
            rule=WRONG_CALL_STATE, reason=reason_wrong_call_state(limit),
            duration=sec.block_duration, key=key, now=now, read_ts=read_ts, ev=ev, kind=kind,
            user=user, count=n,
            details={"users": win.user_list(), "window": sec.wrong_call_state_window},
        ))  # fmt: skip
