"""Per-source state objects of the detection engine (compact: a spoofed flood fills
millions of them, see the engine's module doc "Memory")."""

from __future__ import annotations

import math

import msgspec

from .windows import BoundedDistinct, SlidingWindow

USERS_PER_SOURCE = 32
DOMAINS_PER_SOURCE = 8
IGNORED_USERS = frozenset(("", "unknown"))
MAX_CHALLENGES = 64  # outstanding challenges remembered per source (a small int: no allocation)
_INF = math.inf
_IGNORED_USERS = IGNORED_USERS


class Window(SlidingWindow, gc=False):
    """One sliding window of one rule for one source, with who was involved.

    `users` / `domains` hold a single string until a second distinct one shows
    up (most sources only ever use one): a list costs 64+ bytes per source.
    """

    users: str | list[str] | None = None
    domains: str | list[str] | None = None

    def _fresh(self) -> None:  # a new burst: forget the old details
        self.users = None
        self.domains = None

    def note(self, user: str, domain: str) -> None:
        # written out (and no store when nothing changes): this runs on every counted event
        if user not in _IGNORED_USERS:
            users = self.users
            if users is None:
                self.users = user
            elif users is not user and users != user:
                self.users = _add_capped(users, user, USERS_PER_SOURCE)
        if domain:
            domains = self.domains
            if domains is None:
                self.domains = domain
            elif domains is not domain and domains != domain:
                self.domains = _add_capped(domains, domain, DOMAINS_PER_SOURCE)

    def user_list(self) -> list[str]:
        return _as_list(self.users)

    def domain_list(self) -> list[str]:
        return _as_list(self.domains)


class FailWindow(Window, gc=False):
    """The failed-auth window, plus who failed when (distinct users) and the
    digest username of the last FORBIDDEN register_attempt, which names the account
    of the register_failure that follows (whose to-user is the dialled number for an
    INVITE)."""

    pending_user: str = ""
    seen: BoundedDistinct | None = None


def _add_capped(current: str | list[str] | None, item: str, cap: int) -> str | list[str]:
    if current is None or current == item:
        return item
    if isinstance(current, str):
        return [current, item]
    if item not in current and len(current) < cap:
        current.append(item)
    return current


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class MoreWindows(msgspec.Struct, gc=False):
    """A source's windows other than the registration-rate one, allocated on first use."""

    call: Window | None = None
    fail: FailWindow | None = None
    wcs: Window | None = None
    ext: Window | None = None  # extension scanning (failed calls)

    def ext_window(self) -> Window:
        if self.ext is None:
            self.ext = Window()
        return self.ext

    def fail_window(self) -> FailWindow:
        if self.fail is None:
            self.fail = FailWindow()
        return self.fail

    def wcs_window(self) -> Window:
        if self.wcs is None:
            self.wcs = Window()
        return self.wcs

    def call_window(self) -> Window:
        if self.call is None:
            self.call = Window()
        return self.call


class Track(Window, gc=False):
    """Everything counted for one source, in one 56-byte object when the source
    only sent registrations (a spoofed flood). The track itself is the
    registration-rate window; `more` holds the other windows. `last` is the
    `now` of the latest touch (its identity marks the current LRU entry)."""

    last: float = 0.0
    more: MoreWindows | None = None
    # challenges (pre_register) not yet answered by a register_attempt: an answer to one
    # is the same registration, an attempt without one (a reused nonce) is a new one
    challenges: int = 0

    def _fresh(self) -> None:
        self.users = None
        self.domains = None
        self.challenges = 0


class BanRecord:
    __slots__ = ("count", "last", "until")

    def __init__(self) -> None:
        self.until = 0.0  # monotonic; inf = permanent
        self.count = 0  # bans within the recidive window, this one included
        self.last = -_INF  # monotonic time of the last ban


class WhitelistEntry:
    __slots__ = ("added", "domain", "expires", "last_seen", "user")

    def __init__(self, added: float, now: float, ttl: float, user: str, domain: str) -> None:
        self.added = added  # wall time
        self.last_seen = now
        self.expires = now + ttl
        self.user = user
        self.domain = domain


