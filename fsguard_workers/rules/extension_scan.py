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

EXTENSION_SCAN = "extension_scan"


class CauseMatcher:
    """Hangup causes that count as a failed extension probe (upper case, exact)."""

    def __init__(self, causes: Iterable[str]) -> None:
        self._causes = frozenset(c.strip().upper() for c in causes if c.strip())

    def __call__(self, cause: str) -> bool:
        return cause in self._causes


def reason_extension_scan(calls: int, window: float) -> str:
    return f"Extension scanning: {calls} calls to unknown extensions in {go_duration(window)}"
