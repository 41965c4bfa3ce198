"""A ban as the firewall keeps it, and where bans live (the BanStore protocol).

`MemoryBanStore` serves tests and one-shot tools; durable.SqliteBanStore is the real one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from .store import BAN_SOURCES, BanRecord
from .store_records import rfc3339

GO_ZERO_TIME = "0001-01-01T00:00:00Z"


class BanEntry(msgspec.Struct, kw_only=True):
    """One active ban. `ip` is the kernel element text (an address or an IPv6 prefix)."""

    ip: str
    added_at: float
    expires_at: float  # 0 = permanent
    reason: str
    rule: str = ""
    fail_count: int = 0
    decision_id: str = ""
    source: str = "rule"
    user: str = ""  # SIP user of the decision (chanDaemon fromUser)

    @property
    def permanent(self) -> bool:
        return self.expires_at == 0

    def active(self, now: float) -> bool:
        return self.expires_at == 0 or self.expires_at > now

    def covers(self, expires_at: float) -> bool:
        """Whether a new ban until `expires_at` (0 = forever) adds nothing to this one.

        An active ban is never re-applied, except to upgrade it to permanent.
        """
        return self.permanent or expires_at != 0

    def go_shape(self) -> dict[str, Any]:
        """The Go program's blacklist entry (camelCase, RFC 3339)."""
        shape = {
            "ip": self.ip,
            "addedAt": rfc3339(self.added_at),
            "expiresAt": rfc3339(self.expires_at) if self.expires_at else GO_ZERO_TIME,
            "reason": self.reason,
            "failCount": self.fail_count,
            "permanent": self.permanent,
        }
        if self.source == "upstream":  # fsguard addition: a ban pulled from the CrowdSec LAPI
            shape["origin"] = "crowdsec"
        return shape


class _Expires(Protocol):
    def active(self, now: float) -> bool: ...


E = TypeVar("E", bound=_Expires)


def live(entry: E | None, now: float) -> E | None:
    """`entry` if it is active at `now`: every lookup hides expired entries (as in Go)."""
    return entry if entry is not None and entry.active(now) else None


class BanStore(Protocol):
    """Where bans live. MemoryBanStore now; a SQLite store implements the same methods."""

    def get(self, ip: str, now: float) -> BanEntry | None: ...
    def put_many(
        self, entries: Iterable[BanEntry], gate: Callable[[], Collection[str]] | None = None
    ) -> None:
        """Record entries; `gate()` (called once, before committing) names the keys
        that must not be recorded after all."""
        ...
    def remove(self, ip: str) -> BanEntry | None: ...
    def active(self, now: float) -> list[BanEntry]: ...
    def purge_expired(self, now: float) -> int: ...
    def recidive_counts(self, keys: Sequence[str], since: float) -> dict[str, int]: ...


class MemoryBanStore:
    def __init__(self) -> None:
        self._entries: dict[str, BanEntry] = {}

    def recidive_counts(self, keys: Sequence[str], since: float) -> dict[str, int]:
        return {}  # no durable history: the workers' own recidive count stands

    def get(self, ip: str, now: float) -> BanEntry | None:
        return live(self._entries.get(ip), now)

    def put_many(
        self, entries: Iterable[BanEntry], gate: Callable[[], Collection[str]] | None = None
    ) -> None:
        items = list(entries)
        refused = set(gate()) if gate is not None else set()
        for entry in items:
            if entry.ip not in refused:
                self._entries[entry.ip] = entry

    def remove(self, ip: str) -> BanEntry | None:
        return self._entries.pop(ip, None)

    def active(self, now: float) -> list[BanEntry]:
        return [e for e in self._entries.values() if e.active(now)]

    def purge_expired(self, now: float) -> int:
        dead = [ip for ip, e in self._entries.items() if not e.active(now)]
        for ip in dead:
            del self._entries[ip]
        return len(dead)




def entry_from_record(r: BanRecord) -> BanEntry:
    count = r.evidence.get("count", 0)
    return BanEntry(
        ip=r.key,
        added_at=r.created,
        expires_at=0.0 if r.expires is None else r.expires,
        reason=r.reason,
        rule=r.rule,
        fail_count=count if isinstance(count, int) else 0,
        decision_id=r.decision_id,
        source=r.source,
        user=r.user,
    )


def record_from_entry(e: BanEntry) -> BanRecord:
    # Manual ids ("manual-<pid>-<n>") repeat across restarts: never dedupe on them.
    decision_id = "" if e.decision_id.startswith("manual-") else e.decision_id
    return BanRecord(
        key=e.ip,
        rule=e.rule,
        reason=e.reason,
        created=e.added_at,
        expires=None if e.expires_at == 0 else e.expires_at,
        source=e.source if e.source in BAN_SOURCES else "manual",
        decision_id=decision_id,
        user=e.user,
        evidence={"count": e.fail_count} if e.fail_count else {},
    )
