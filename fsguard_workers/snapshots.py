"""The engine's read side: the Go snapshot endpoints (/security/failed,
/security/wrong-call-states, /security/rate-limit/*, the learned whitelist) and the
simulated decisions, rendered from the per-source state."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared.config import RateLimitConfig, SecurityConfig
from shared.ops.common import WhitelistEntry
from shared.ops.worker import FailedEntry, RateEntry, SimulatedDecision, WrongCallStateEntry

from .rules.modes import Simulations
from .state import Track
from .state import WhitelistEntry as Learned

S = TypeVar("S")


class Snapshots:
    """Mixin of DetectionEngine (the attributes below are the engine's)."""

    _clock: Callable[[], float]
    _wallclock: Callable[[], float]
    _tracks: dict[int, Track]
    _learned: OrderedDict[int, Learned]
    _sec: SecurityConfig
    _rl: RateLimitConfig
    _sims: Simulations

    def _key_text(self, key: int) -> str:
        raise NotImplementedError

    def _snapshot(
        self,
        pick: Callable[[Track], Any],
        window: float,
        render: Callable[[Any, int, float, Callable[[float], str]], S],
    ) -> dict[str, S]:
        """ip -> render(win, live count, now, wall-clock formatter) for every source whose
        picked window still holds events (the Go snapshot endpoints)."""
        now = self._clock()
        wall = self._wall_of(now)
        out: dict[str, S] = {}
        for key, tr in self._tracks.items():
            win = pick(tr)
            if win is None:
                continue
            count = win.trim(now, window)
            if count:
                out[self._key_text(key)] = render(win, count, now, wall)
        return out

    def failed_snapshot(self) -> dict[str, FailedEntry]:
        """GET /security/failed: ip -> {count, firstAttempt, lastAttempt, userIds, domains}."""
        window = self._sec.failed_attempts_window
        return self._snapshot(
            lambda tr: tr.more.fail if tr.more else None,
            window,
            lambda win, count, now, wall: FailedEntry(
                count=count,
                firstAttempt=wall(win.oldest()),
                lastAttempt=wall(win.newest()),
                userIds=win.seen.items_since(now - window) if win.seen else [],
                domains=win.domain_list(),
            ),
        )

    def wrong_call_state_snapshot(self) -> dict[str, WrongCallStateEntry]:
        """GET /security/wrong-call-states: ip -> {count, firstAttempt, lastAttempt, userIds}."""
        return self._snapshot(
            lambda tr: tr.more.wcs if tr.more else None,
            self._sec.wrong_call_state_window,
            lambda win, count, now, wall: WrongCallStateEntry(
                count=count,
                firstAttempt=wall(win.oldest()),
                lastAttempt=wall(win.newest()),
                userIds=win.user_list(),
            ),
        )

    def rate_snapshot(self, kind: str) -> dict[str, RateEntry]:
        """kind: "calls" or "registrations"."""
        if kind == "calls":
            window = self._rl.call_rate_interval
            pick: Callable[[Track], Any] = lambda tr: tr.more.call if tr.more else None  # noqa: E731
        elif kind == "registrations":
            window = self._rl.registration_window
            pick = lambda tr: tr  # noqa: E731  (the registration window lives in the Track)
        else:
            raise ValueError(f"unknown rate kind: {kind!r}")
        return self._snapshot(
            pick,
            window,
            lambda win, count, now, wall: RateEntry(
                count=count,
                firstRequest=wall(win.oldest()),
                lastRequest=wall(win.newest()),
                userIds=win.user_list(),
                domains=win.domain_list(),
            ),
        )

    def whitelist_snapshot(self) -> dict[str, WhitelistEntry]:
        """Learned whitelist: ip -> {ip, addedAt, expiresAt, lastSeen, userId, domain, ...}."""
        now = self._clock()
        wall = self._wall_of(now)
        out: dict[str, WhitelistEntry] = {}
        for key, entry in self._learned.items():
            if entry.expires <= now:
                continue
            ip = self._key_text(key)
            out[ip] = WhitelistEntry(
                ip=ip,
                addedAt=_rfc3339(entry.added),
                expiresAt=wall(entry.expires),
                lastSeen=wall(entry.last_seen),
                userId=entry.user,
                domain=entry.domain,
                permanent=False,
            )
        return out

    def simulated_snapshot(self) -> list[SimulatedDecision]:
        """GET /security/simulated: this worker's recent simulated decisions, oldest first."""
        return list(self._sims.recent)

    def _wall_of(self, now: float) -> Callable[[float], str]:
        offset = self._wallclock() - now
        return lambda t: _rfc3339(t + offset)



def _rfc3339(wall: float) -> str:
    if not math.isfinite(wall):
        return ""
    stamp = datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")
