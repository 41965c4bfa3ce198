"""Protected sources: addresses a single forged packet must not get banned.

SIP over UDP has no source check, so an event that needs no completed exchange
(a challenged request, an unauthenticated call) can carry any source address. Such
an event never bans a protected source; the call is still killed and the event is
counted and logged as suspected spoofing. Evidence that needs a completed exchange
(an answered challenge: register_attempt, register_failure, register) still bans.

Protected:
- an address that currently holds a successful registration (sofia::register with a
  User-Agent that is not a scanner, until its `expires` runs out or it unregisters);
- a gateway configured in FreeSWITCH (the supervisor asks `sofia xmlstatus gateway`
  at connect and every `security.gateway_refresh_interval` and hands the addresses
  to the workers);
- an operator whitelist entry (the firewall refuses those anyway);
- trusted networks (skipped before any rule runs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from ..events import Event, Kind

DEFAULT_EXPIRES = 3600.0
MAX_EXPIRES = 86400.0
GRACE = 60.0  # phones re-register a little after the expiry they were given
USERS_PER_SOURCE = 32

_SPOOFABLE = frozenset((Kind.PRE_REGISTER, Kind.WRONG_CALL_STATE))
_CALLS = frozenset((Kind.CHANNEL_CREATE, Kind.HANGUP))


def spoofable(kind: Kind, ev: Event) -> bool:
    """True for an event a forged source address can produce on its own: a challenged
    request (pre_register), an abandoned challenged INVITE (wrong_call_state), a call
    FreeSWITCH did not authenticate (open profile)."""
    if kind in _SPOOFABLE:
        return True
    if kind in _CALLS:
        return ev.sip_authorized.lower() != "true"
    return False


def expires_of(value: str) -> float:
    """Seconds from a sofia::register `expires` header (defaults when unusable)."""
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_EXPIRES
    if not seconds > 0:
        return DEFAULT_EXPIRES
    return min(seconds, MAX_EXPIRES)


class Protection:
    """Registrations currently held (per source: user -> until) and gateway keys."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._registered: OrderedDict[int, dict[str, float]] = OrderedDict()
        self._gateways: frozenset[int] = frozenset()
        self.gateway_addresses: list[str] = []

    def registered(self, key: int, user: str, until: float) -> None:
        users = self._registered.get(key)
        if users is None:
            users = self._registered[key] = {}
            if len(self._registered) > self._cap:
                self._registered.popitem(last=False)
        else:
            self._registered.move_to_end(key)
        if user in users or len(users) < USERS_PER_SOURCE:
            users[user] = until

    def unregistered(self, key: int, user: str) -> None:
        users = self._registered.get(key)
        if users is not None:
            users.pop(user, None)
            if not users:
                del self._registered[key]

    def set_gateways(self, keys: Iterable[int], addresses: list[str]) -> None:
        self._gateways = frozenset(keys)
        self.gateway_addresses = list(addresses)

    def why(self, key: int, now: float) -> str:
        """"gateway", "registered" or "" (not protected)."""
        if key in self._gateways:
            return "gateway"
        users = self._registered.get(key)
        if users is not None:
            if any(until > now for until in users.values()):
                return "registered"
            del self._registered[key]
        return ""

    def sweep(self, now: float, budget: int) -> None:
        reg = self._registered
        for _ in range(min(budget, len(reg))):
            key, users = next(iter(reg.items()))
            if all(until <= now for until in users.values()):
                del reg[key]
            else:
                reg.move_to_end(key)

    def counts(self) -> dict[str, int]:
        return {"registered": len(self._registered), "gateways": len(self._gateways)}
