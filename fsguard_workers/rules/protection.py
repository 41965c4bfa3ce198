"""Protected sources: addresses a single forged packet must not get banned.

SIP over UDP has no source check, so an event that needs no completed exchange
(a challenged request, an unauthenticated call) can carry any source address. Such
an event never bans a protected source; the call is still killed and the event is
counted and logged as suspected spoofing. Evidence that needs a completed exchange
(an answered challenge: register_attempt, register_failure, register) still bans.

Protected:
- an address that currently holds a successful registration (sofia::register with a
  User-Agent that is not a scanner, until sofia::unregister / sofia::expire for that
  user, at most REGISTRATION_HOLD after the last sofia::register);
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

# A registration is held from sofia::register until FreeSWITCH says it ended
# (sofia::unregister, or sofia::expire when it ran out), and at most this long without
# a new sofia::register (phones re-register well within their expiry; reading the
# `expires` header instead would cost a decoded field on every event).
REGISTRATION_HOLD = 7200.0
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


class Protection:
    """Registrations currently held (per source: user -> until) and gateway keys."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        # insertion order (no reordering on refresh: the hot path is one lookup); the
        # sweep moves sources still held to the back, the cap drops the front
        self._registered: OrderedDict[int, dict[str, float]] = OrderedDict()
        self._gateways: frozenset[int] = frozenset()
        self.gateway_addresses: list[str] = []

    def registered(self, key: int, user: str, until: float) -> None:
        reg = self._registered
        users = reg.get(key)
        if users is not None and user in users:  # a re-registration: the common case
            users[user] = until
            return
        if users is None:
            users = reg[key] = {}
            if len(reg) > self._cap:
                reg.popitem(last=False)
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
            if any(until > now for until in users.values()):
                reg.move_to_end(key)
            else:
                del reg[key]

    def counts(self) -> dict[str, int]:
        return {"registered": len(self._registered), "gateways": len(self._gateways)}
