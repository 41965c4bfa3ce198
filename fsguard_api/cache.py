"""The response cache: only GET /security/stats is cached, as in the Go program.

Unlike Go (5 minutes by default, forever when the TTL is <= 0), an entry is served for at
most `cache.security_ttl` (default 5 s) and a TTL <= 0 disables caching.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fsguard_api.models import CacheOperations, CacheSecurityStats, CacheStats
from shared.durations import go_duration


class ResponseCache:
    def __init__(self, enabled: bool, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.enabled = enabled
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[float, bytes]] = {}
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.reads = 0
        self.deletes = 0

    @property
    def active(self) -> bool:
        return self.enabled and self.ttl > 0

    def get(self, key: str) -> bytes | None:
        if not self.active:
            return None
        self.reads += 1
        item = self._entries.get(key)
        if item is not None and item[0] > self.clock():
            self.hits += 1
            return item[1]
        if item is not None:
            del self._entries[key]
            self.deletes += 1
        self.misses += 1
        return None

    def put(self, key: str, body: bytes) -> None:
        if self.active:
            self._entries[key] = (self.clock() + self.ttl, body)
            self.writes += 1

    def clear(self) -> None:
        self._entries.clear()  # not counted as deletes (Go)

    def entries(self) -> int:
        now = self.clock()
        return sum(1 for expires, _ in self._entries.values() if expires > now)

    def stats(self) -> CacheStats:
        if not self.enabled:
            return CacheStats(enabled=False)
        return CacheStats(
            enabled=True,
            security=CacheSecurityStats(
                hits=self.hits,
                misses=self.misses,
                entries=self.entries(),
                ttl=go_duration(self.ttl),
            ),
            operations=CacheOperations(
                writes=self.writes, reads=self.reads, misses=self.misses, deletes=self.deletes
            ),
        )
