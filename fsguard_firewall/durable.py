"""The firewall's durable state: the SQLite Store (store.py) behind the Firewall's protocols.

Only the firewall process opens the store (an exclusive lock refuses a second owner).
In-memory mirrors of the active bans and whitelist answer the hot-path lookups; every
change is committed to SQLite *before* it is acknowledged (control reply, "banned" log
line, DecisionAck to the worker), so an acknowledged ban survives kill -9 and power loss
(WAL + synchronous=FULL).

- `SqliteBanStore` implements process.BanStore (get/put_many/remove/active/purge_expired).
- `SqliteWhitelist` implements lists.Whitelist; `PersistentPatterns` persists run-time
  untrusted patterns (config patterns come from the config at every start).
- `Durable` wires it all into a Firewall: decision ids seen by the store (a worker
  re-sending after a firewall restart) are acknowledged without being re-applied,
  DecisionAcks go back to worker *i* over `worker-<i>.acks` (firewall PUSH ⇄ worker
  PULL), the chanDaemon Reporter queues a report per committed new ban, and the control
  ops `reconcile`, `lists_snapshot`, `bans_export`, `bans_import` are added.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from shared import addresses
from shared.config import Config, worker_count
from shared.control import ControlError, Handler
from shared.messages import BanDecision, DecisionAck, ListChange, encode

from . import reconcile as rec
from .kernel import Element, FirewallError, KernelFirewall
from .lists import UntrustedPatterns, WhitelistEntry
from .reporter import Reporter
from .store import (
    BAN_SOURCES,
    BanRecord,
    ImportDataError,
    Store,
    StoreError,
    WhitelistRecord,
    default_path,
    normalize_key,
)

if TYPE_CHECKING:
    from .process import BanEntry, Firewall

log = logging.getLogger("fsguard.firewall")

EX_CONFIG = 78  # sysexits.h: the state store cannot be used; the supervisor does not retry
EXPIRE_LIMIT = 1000  # rows per expire() transaction
EXPIRE_ROUNDS = 10  # transactions per sweep at most (incremental)
PRUNE_SECONDS = 60.0
REARM_SECONDS = 3600.0  # long bans are re-armed well before MAX_TIMEOUT (~24.8 days)
DECISIONS_KEEP = 7 * 86400.0
ACK_HWM = 100_000


def open_store(config: Config) -> Store:
    """The state store in `paths.state_dir` (created if missing). Raises StoreError."""
    state_dir = config.paths.state_dir
    try:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create state directory {state_dir}: {exc.strerror}") from exc
    return Store(default_path(state_dir))


# --- bans --------------------------------------------------------------------------------


def entry_from_record(r: BanRecord) -> BanEntry:
    from .process import BanEntry

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
        entry = self._mirror.get(ip)
        return entry if entry is not None and entry.active(now) else None

    def put_many(self, entries: Iterable[BanEntry]) -> None:
        items = list(entries)
        if not items:
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
            [record_from_entry(e) for e in items], report
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
        entry = self._mirror.get(ip)
        return entry if entry is not None and entry.active(now) else None

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


# --- wiring -----------------------------------------------------------------------------------


class Durable:
    """Everything durable about one Firewall (see the module doc)."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        sec = config.security
        self.reporter: Reporter | None = None
        if sec.chandaemon.enabled and not sec.dry_run and sec.auto_block_enabled:
            self.reporter = Reporter(store, sec.chandaemon)
        self.bans = SqliteBanStore(store, self.reporter)
        self.fw: Firewall | None = None
        self.acks: AckSender | None = None
        self.last_reconcile: rec.ReconcileResult | None = None
        self.store_duplicates = 0
        self.expired = 0
        self.rearmed = 0
        self._next_prune = time.monotonic() + PRUNE_SECONDS
        self._next_rearm = time.monotonic() + REARM_SECONDS

    @classmethod
    def open(cls, config: Config) -> Durable:
        store = open_store(config)
        try:
            return cls(config, store)
        except BaseException:
            store.close()
            raise

    def attach(self, fw: Firewall, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        """Give the firewall's lists their persistence; start acks and the reporter."""
        self.fw = fw
        fw.lists.whitelist = SqliteWhitelist(self.store)
        fw.lists.untrusted = PersistentPatterns(
            self.store, list(self.config.security.untrusted_networks)
        )
        if ctx is not None:
            self.acks = AckSender(ctx, self.config.paths.runtime_dir, worker_count(self.config))
        if self.reporter is not None:
            self.reporter.start()

    def _firewall(self) -> Firewall:
        if self.fw is None:
            raise RuntimeError("Durable.attach was not called")
        return self.fw

    # --- kernel ------------------------------------------------------------------------

    def refuse(self, elem: Element) -> bool:
        fw = self._firewall()
        return fw.is_trusted(elem) or fw.lists.is_whitelisted(str(elem))

    def reconcile(self, migrate: bool = True) -> rec.ReconcileResult:
        fw = self._firewall()
        kernel: KernelFirewall = fw.kernel
        migrated: list[str] = []
        if migrate and not kernel.dry_run:
            migrated = rec.ensure_set_params(kernel)
            kernel.ensure_setup()
        result = rec.reconcile(
            kernel,
            self.bans,
            keep_foreign=self.config.security.keep_foreign_entries,
            refuse=self.refuse,
        )
        result.migrated = migrated
        self.last_reconcile = result
        level = logging.WARNING if result.changed() or result.errors else logging.INFO
        log.log(level, "reconcile: %s", result.summary())
        for err in result.errors[:5]:
            log.error("reconcile: %s", err)
        return result

    # --- decisions ---------------------------------------------------------------------

    def before_batch(self, batch: list[BanDecision]) -> list[BanDecision]:
        """Drop decisions the store already processed (re-sent after a restart)."""
        fw = self._firewall()
        seen_mem = fw._seen_ids
        seen = self.seen_ids([d.id for d in batch if d.id and d.id not in seen_mem])
        out: list[BanDecision] = []
        for d in batch:
            if d.id in seen and d.id not in seen_mem:
                fw.stats.decisions_received += 1
                fw.stats.duplicates += 1
                self.store_duplicates += 1
                continue
            out.append(d)
        return out

    def seen_ids(self, ids: list[str]) -> set[str]:
        """The ids among `ids` the store already processed (one query per 500)."""
        found: set[str] = set()
        with self.store._read("seen_decisions") as db:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in db.execute(
                        "SELECT decision_id FROM processed_decisions "
                        f"WHERE decision_id IN ({marks})",
                        chunk,
                    )
                )
        return found

    def after_batch(self, batch: list[BanDecision]) -> None:
        """Acknowledge every decision of a batch handled (and committed) without error;
        one whose kernel apply failed gets ok=False and is re-sent by its worker."""
        if self.acks is None:
            return
        seen = self._firewall()._seen_ids
        for d in batch:
            if not d.id or d.worker < 0:
                continue
            if d.id in seen or self.store.seen_decision(d.id):
                self.acks.send(d.worker, DecisionAck(id=d.id, ok=True))
            else:
                self.acks.send(d.worker, DecisionAck(id=d.id, ok=False, error="kernel error"))

    # --- periodic ----------------------------------------------------------------------

    def tick(self) -> None:
        """Prune old history and re-arm long bans (time-gated; call from the loop)."""
        now_m = time.monotonic()
        if now_m >= self._next_prune:
            self._next_prune = now_m + PRUNE_SECONDS
            self.store.prune(
                time.time(),
                recidive_keep=max(self.config.security.recidive.window, 86400.0),
                decisions_keep=DECISIONS_KEEP,
            )
        if now_m >= self._next_rearm:
            self._next_rearm = now_m + REARM_SECONDS
            self.rearm()

    def rearm(self) -> int:
        fw = self._firewall()
        if not fw.kernel_enabled:
            return 0
        now = time.time()
        count = rec.rearm(fw.kernel, self.bans.active(now), now)
        self.rearmed += count
        if count:
            log.info("re-armed %d bans longer than ipset's largest timeout", count)
        return count

    # --- control ops -------------------------------------------------------------------

    def extend(self, handlers: dict[str, Handler]) -> dict[str, Handler]:
        base_stats = handlers["stats"]

        def stats(args: dict[str, Any]) -> Any:
            data = base_stats(args)
            if isinstance(data, dict):
                data.update(self.counters())
            return data

        return {
            **handlers,
            "stats": stats,
            "reconcile": self.op_reconcile,
            "lists_snapshot": self.op_lists_snapshot,
            "bans_export": lambda args: self.store.export_json(),
            "bans_import": self.op_bans_import,
        }

    def report_counters(self) -> dict[str, int]:
        if self.reporter is None:
            return {"reportsSent": 0, "reportsFailed": 0, "reportsPending": 0}
        s = self.reporter.stats()
        return {k: s[k] for k in ("reportsSent", "reportsFailed", "reportsPending")}

    def counters(self) -> dict[str, Any]:
        reports = self.report_counters()
        return {
            **reports,  # the Go names, and the snake_case ones the API reads
            "reports_sent": reports["reportsSent"],
            "reports_failed": reports["reportsFailed"],
            "reports_pending": reports["reportsPending"],
            "store_duplicates": self.store_duplicates,
            "acks_sent": self.acks.sent if self.acks else 0,
            "acks_dropped": self.acks.dropped if self.acks else 0,
            "rearmed": self.rearmed,
            "last_reconcile": (
                msgspec.to_builtins(self.last_reconcile) if self.last_reconcile else None
            ),
        }

    def op_reconcile(self, args: dict[str, Any]) -> dict[str, Any]:
        fw = self._firewall()
        if not fw.kernel_enabled:
            raise ControlError("auto_block_enabled is false: the kernel is not managed", 409)
        try:
            result = self.reconcile()
        except FirewallError as exc:
            raise ControlError(f"firewall error: {exc}", 500) from None
        data: dict[str, Any] = msgspec.to_builtins(result)
        return data

    def op_lists_snapshot(self, args: dict[str, Any]) -> dict[str, Any]:
        fw = self._firewall()
        now = time.time()
        return {
            "pid": os.getpid(),
            "whitelist": [[e.ip, e.expires_at] for e in fw.lists.whitelist.active(now)],
            "untrusted": fw.lists.untrusted.list(),
        }

    def op_bans_import(self, args: dict[str, Any]) -> dict[str, Any]:
        fw = self._firewall()
        data = args.get("data")
        try:
            check_import(fw.kernel, fw.is_trusted, data)
            count = self.store.import_json(data, time.time())
        except ImportDataError as exc:
            raise ControlError(str(exc), 400) from None
        self.bans.reload()
        wl = fw.lists.whitelist
        if isinstance(wl, SqliteWhitelist):
            wl.reload()
        fw.lists.untrusted = PersistentPatterns(
            self.store, list(self.config.security.untrusted_networks)
        )
        now = time.time()
        for e in fw.lists.whitelist.active(now):
            fw.publish(ListChange(list="whitelist", op="add", ip=e.ip, expires=e.expires_at))
        result: dict[str, Any] = {"imported": count}
        if fw.kernel_enabled:
            result["reconcile"] = msgspec.to_builtins(self.reconcile(migrate=False))
        log.info("imported %d entries", count)
        return result

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.stop()
        if self.acks is not None:
            self.acks.close()
        self.store.close()


def check_import(kernel: KernelFirewall, is_trusted: Any, data: Any) -> None:
    """Refuse (ImportDataError, nothing written) bans on trusted networks."""
    if not isinstance(data, dict):
        return  # the store's own validation names the problem
    section = data.get("blacklist", {})
    items = list(section.items()) if isinstance(section, dict) else list(enumerate(section or []))
    for label, entry in items:
        if not isinstance(entry, dict):
            continue
        raw = entry.get("ip", label)
        try:
            key, _ = normalize_key(str(raw))
            target = rec._parse_member(key)
            if target is None:
                continue
            elem = kernel.element(target)
        except ValueError:
            continue  # reported by the store's validation
        if is_trusted(elem):
            raise ImportDataError(
                f"import refused, nothing written: blacklist[{label!r}]: "
                f"{key} is in a trusted network"
            )
