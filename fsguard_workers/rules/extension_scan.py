"""Extension scanning: calls from one source that end with a "no such number" cause.

FreeSWITCH reports the end of a call in CHANNEL_HANGUP_COMPLETE; an attacker walking
through extensions makes many calls ending in NO_ROUTE_DESTINATION (dialplan has no
match), UNALLOCATED_NUMBER or USER_NOT_REGISTERED (the extension exists but no phone
is registered). Only sofia legs that carry `variable_sip_network_ip` are counted:
loopback and bridged legs copy Caller-Network-Addr but are not the caller's request.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.durations import go_duration
from shared.iputil import IPAddress

from ..events import Event, Kind, text, user_of
from ..evidence import Evidence
from .base import RuleBase

EXTENSION_SCAN = "extension_scan"
_HANGUP = Kind.HANGUP


class CauseMatcher:
    """Hangup causes that count as a failed extension probe (upper case, exact)."""

    def __init__(self, causes: Iterable[str]) -> None:
        self._causes = frozenset(c.strip().upper() for c in causes if c.strip())

    def __call__(self, cause: str) -> bool:
        return cause in self._causes


def reason_extension_scan(calls: int, window: float) -> str:
    return f"Extension scanning: {calls} calls to unknown extensions in {go_duration(window)}"


class ExtensionScan(RuleBase):
    """Mixin of DetectionEngine: CHANNEL_HANGUP_COMPLETE of a sofia leg."""

    def _on_hangup(self, ev: Event, addr: IPAddress, key: int, now: float, read_ts: float) -> None:
        if not self._ext_on or not ev.sip_network_ip or not self._ext_cause(ev.hangup_cause):
            return
        self._c["extension_scan_calls"] += 1
        ext = self._ext
        tr = self._track(key, now)
        win = self._more(tr).ext_window()
        n = win.hit(now, ext.window, ext.max_failed_calls)
        destination = self._intern(text(ev.destination))
        win.note(destination, "")
        if n < ext.max_failed_calls:
            return
        self._decide(Evidence(
            rule=EXTENSION_SCAN, reason=reason_extension_scan(n, ext.window),
            duration=self._sec.block_duration, key=key, now=now, read_ts=read_ts, ev=ev,
            kind=_HANGUP, ua=text(ev.sip_user_agent), user=user_of(_HANGUP, ev), count=n,
            details={
                "destinations": win.user_list(),
                "hangup_cause": ev.hangup_cause,
                "window": ext.window,
            },
        ))  # fmt: skip
