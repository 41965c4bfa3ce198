"""SQLite behind the firewall's protocols (only the firewall process opens the store).

In-memory mirrors of the active bans and whitelist answer the hot-path lookups; every
change is committed to SQLite before it is acknowledged (WAL + synchronous=FULL).

- `SqliteBanStore` implements entries.BanStore; `SqliteWhitelist` lists.Whitelist;
  `PersistentPatterns` persists run-time untrusted patterns.
- `AckSender`: DecisionAcks go back to worker *i* over `worker-<i>.acks` (firewall PUSH ⇄
  worker PULL).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence

import zmq

from shared import addresses
from shared.messages import DecisionAck, encode

from .entries import BanEntry, entry_from_record, live, record_from_entry
from .lists import UntrustedPatterns, WhitelistEntry
from .reporter import Reporter
from .store import BanRecord, Store, WhitelistRecord

EXPIRE_LIMIT = 1000  # rows per expire() transaction
EXPIRE_ROUNDS = 10  # transactions per sweep at most (incremental)
ACK_HWM = 100_000


class SqliteBanStore:
    """process.BanStore over the Store, with an in-memory mirror of the active bans."""

    def __init__(self, store: Store, reporter: Reporter | None = None) -> None:
        self.store = store
        self.reporter = reporter
        self._mirror: dict[str, BanEntry] = {}
        self.reports_queued = 0
        self.reload()

    def reload(self) -> None:
        self._mirror = {r.key: entry_from_record(r) for r in self.store.active_bans(time.time())}

    def get(self, ip: str, now: float) -> BanEntry | None:
        return live(self._mirror.get(ip), now)

    def put_many(
        self, entries: Iterable[BanEntry], gate: Callable[[], Collection[str]] | None = None
    ) -> None:
        items = list(entries)
        if not items:
            if gate is not None:
                gate()
            return
        reporter = self.reporter if self.reporter is not None and self.reporter.enabled else None
        report = None
        if reporter is not None:
            def report(r: BanRecord) -> str:
                return reporter.payload_for(
                    r.key,
                    r.reason,
                    0.0 if r.expires is None else r.expires - r.created,
                    "" if r.source == "manual" else r.user,
                )
        # Bans and their reports commit together: a crash cannot leave a ban unreported.
        changed, queued = self.store.add_bans_reported(
            [record_from_entry(e) for e in items], report, gate
        )
        new = 0
        for r in changed:
            before = self._mirror.get(r.key)
            if (before is None or not before.active(r.created)) and r.source != "upstream":
                new += 1  # (fleet bans are not reported to chanDaemon)
            self._mirror[r.key] = entry_from_record(r)
        if reporter is not None:
            self.reports_queued += queued
            reporter.queued(queued, dropped=max(0, new - queued))

    def remove(self, ip: str) -> BanEntry | None:
        self.store.remove_ban(ip)
        return self._mirror.pop(ip, None)

    def remove_many(self, keys: Sequence[str]) -> None:
        """remove() for many keys, one transaction."""
        self.store.remove_bans(keys)
        for key in keys:
            self._mirror.pop(key, None)

    def recidive_counts(self, keys: Sequence[str], since: float) -> dict[str, int]:
        return self.store.recidive_counts(keys, since)

    def active(self, now: float) -> list[BanEntry]:
        return [e for e in self._mirror.values() if e.active(now)]

    def purge_expired(self, now: float) -> int:
        """Incremental: at most EXPIRE_ROUNDS small transactions per call."""
        total = 0
        for _ in range(EXPIRE_ROUNDS):
            keys = self.store.expire(now, EXPIRE_LIMIT)
            for key in keys:
                entry = self._mirror.get(key)
                if entry is not None and not entry.active(now):
                    del self._mirror[key]
            total += len(keys)
            if len(keys) < EXPIRE_LIMIT:
                break
        return total


# --- whitelist and patterns ------------------------------------------------------------------


def _wl_entry(r: WhitelistRecord) -> WhitelistEntry:
    return WhitelistEntry(
        ip=r.ip,
        added_at=r.added,
        expires_at=0.0 if r.expires is None else r.expires,
        user_id=r.user_id,
        domain=r.domain,
        last_seen=r.last_seen,
    )


class SqliteWhitelist:
    """lists.Whitelist over the Store (manual entries), mirrored in memory."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._mirror: dict[str, WhitelistEntry] = {}
        self.reload()

    def reload(self) -> None:
        self._mirror = {r.ip: _wl_entry(r) for r in self.store.whitelist_active(time.time())}

    def put(self, entry: WhitelistEntry) -> None:
        self.store.whitelist_add(
            WhitelistRecord(
                ip=entry.ip,
                added=entry.added_at,
                expires=None if entry.expires_at == 0 else entry.expires_at,
                user_id=entry.user_id,
                domain=entry.domain,
                last_seen=entry.last_seen or entry.added_at,
                source="manual",
            )
        )
        self._mirror[entry.ip] = entry

    def remove(self, ip: str) -> bool:
        gone = self.store.whitelist_remove(ip)
        return self._mirror.pop(ip, None) is not None or gone

    def get(self, ip: str, now: float) -> WhitelistEntry | None:
        return live(self._mirror.get(ip), now)

    def active(self, now: float) -> list[WhitelistEntry]:
        dead = [ip for ip, e in self._mirror.items() if not e.active(now)]
        for ip in dead:
            del self._mirror[ip]  # the rows go with Store.prune
        return list(self._mirror.values())


class PersistentPatterns(UntrustedPatterns):
    """Untrusted patterns: the config's, plus run-time additions committed to the store."""

    def __init__(self, store: Store, initial: list[str]) -> None:
        self.store = store
        stored = [p for p, source in store.patterns() if source == "runtime"]
        super().__init__([*initial, *stored])

    def add(self, pattern: str) -> bool:
        if pattern in self:
            return False
        self.store.pattern_add(pattern, time.time(), "runtime")
        return super().add(pattern)

    def remove(self, pattern: str) -> bool:
        if pattern not in self:
            return False
        self.store.pattern_remove(pattern)
        return super().remove(pattern)


# --- acknowledgements to the workers ----------------------------------------------------------


class AckSender:
    """One PUSH per worker, connected to `worker-<i>.acks` (the worker binds a PULL)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], runtime: str, workers: int) -> None:
        self.ctx = ctx
        self.runtime = runtime
        self.workers = workers
        self._socks: dict[int, zmq.Socket[bytes]] = {}
        self.sent = 0
        self.dropped = 0

    def _sock(self, index: int) -> zmq.Socket[bytes]:
        sock = self._socks.get(index)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, ACK_HWM)
            sock.connect(addresses.worker_acks(self.runtime, index))
            self._socks[index] = sock
        return sock

    def send(self, index: int, ack: DecisionAck) -> None:
        if not 0 <= index < self.workers:
            return
        try:
            self._sock(index).send(encode(ack), zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1  # the worker re-sends; the firewall answers again

    def hello(self) -> None:
        """Tell every worker the firewall (re)started: re-send unacked, resync lists."""
        for index in range(self.workers):
            self.send(index, DecisionAck(id="", ok=True, error=f"firewall-start {os.getpid()}"))

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close(0)
        self._socks.clear()
