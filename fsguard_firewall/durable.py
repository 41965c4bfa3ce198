"""The firewall's durable state wired into a Firewall (the store adapters are persist.py).

Only the firewall process opens the store (an exclusive lock refuses a second owner).
`Durable` gives the ledger its SQLite store and the store's processed decision ids (a
worker re-sending after a firewall restart is acknowledged without a re-apply), the
workers' acks, the chanDaemon Reporter (a report per committed new ban), the periodic
work (prune, re-arm, drift check, backlog flush) and the control ops `reconcile`,
`drift_check`, `lists_snapshot`, `bans_export`, `bans_import`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import zmq

from fsguard_firewall.stats_op import add_counters
from shared.config import Config, worker_count
from shared.control import ControlError
from shared.iputil import shard_of
from shared.messages import ListChange
from shared.ops import firewall as ops
from shared.ops.base import Empty, OpTable
from shared.ops.firewall_bans import FirewallStats
from shared.ops.firewall_state import (
    ImportRequest,
    ImportResult,
    ListsSnapshot,
    ReconcileRequest,
    ReconcileResult,
    SnapshotRequest,
)

from . import degraded, sync
from . import reconcile as rec
from .backend import FirewallError, KernelBackend
from .persist import AckSender, PersistentPatterns, SqliteBanStore, SqliteWhitelist
from .reporter import Reporter
from .store import ImportDataError, Store, StoreError, default_path, normalize_key

if TYPE_CHECKING:
    from .firewall import Firewall

log = logging.getLogger("fsguard.firewall")

EX_CONFIG = 78  # sysexits.h: the state store cannot be used; the supervisor does not retry
PRUNE_SECONDS = 60.0
REARM_SECONDS = 3600.0  # long bans are re-armed well before MAX_TIMEOUT (~24.8 days)
DECISIONS_KEEP = 7 * 86400.0


def open_store(config: Config) -> Store:
    """The state store in `paths.state_dir` (created if missing). Raises StoreError."""
    state_dir = config.paths.state_dir
    try:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create state directory {state_dir}: {exc.strerror}") from exc
    return Store(default_path(state_dir))


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
        self.last_reconcile: ReconcileResult | None = None
        self.last_drift: ReconcileResult | None = None
        self.expired = 0
        self.rearmed = 0
        self._next_prune = time.monotonic() + PRUNE_SECONDS
        self._next_rearm = time.monotonic() + REARM_SECONDS
        self._next_drift = time.monotonic() + max(1.0, sec.drift_check_interval)
        self.degraded = ""  # why the store is a scratch one (state directory unwritable)

    @classmethod
    def open(cls, config: Config) -> Durable:
        store = open_store(config)
        try:
            return cls(config, store)
        except BaseException:
            store.close()
            raise

    @classmethod
    def open_degraded(cls, config: Config, reason: str) -> Durable:
        """On a scratch store (degraded.py): the state directory cannot be written."""
        durable = cls(config, degraded.open_scratch(config))
        durable.degraded = reason
        durable._complain()
        return durable

    def _complain(self) -> None:
        msg = ("STATE DIRECTORY %s UNUSABLE (%s): running DEGRADED on a scratch store in "
               "the runtime directory; bans are enforced in the kernel but not durable "
               "until the state directory is writable again")  # fmt: skip
        if self.fw is not None:
            self.fw.ledger.loud("degraded", msg, self.config.paths.state_dir, self.degraded)
        else:
            log.error(msg, self.config.paths.state_dir, self.degraded)

    def _retry_real(self) -> None:
        """Degraded: switch to the real store as soon as it opens for writing."""
        real = degraded.try_real(self.config)
        if real is None:
            self._complain()
            return
        scratch = self.store
        try:
            copied = degraded.copy_state(scratch, real)
        except StoreError as exc:
            real.close()
            log.error("state store reopened but the scratch state could not be written: %s", exc)
            return
        self.store = real
        self.bans.store = real
        self.bans.reload()
        if self.reporter is not None:
            self.reporter.store = real
        fw = self._firewall()
        if isinstance(fw.lists.whitelist, SqliteWhitelist):
            fw.lists.whitelist.store = real
            fw.lists.whitelist.reload()
        if isinstance(fw.lists.untrusted, PersistentPatterns):
            fw.lists.untrusted.store = real
        scratch.close()
        log.warning("state directory %s writable again: %d bans from the scratch store "
                    "written, running normally", self.config.paths.state_dir, copied)  # fmt: skip
        self.degraded = ""

    def attach(self, fw: Firewall, ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        """Give the firewall's ledger and lists their persistence; start acks and the
        reporter."""
        self.fw = fw
        fw.ledger.store = self.bans
        fw.ledger.processed = self.seen_ids
        fw.lists.whitelist = SqliteWhitelist(self.store)
        fw.lists.untrusted = PersistentPatterns(
            self.store, list(self.config.security.untrusted_networks)
        )
        if ctx is not None:
            self.acks = AckSender(ctx, self.config.paths.runtime_dir, worker_count(self.config))
            fw.ledger.ack = self.acks.send
        if self.reporter is not None:
            self.reporter.start()

    def _firewall(self) -> Firewall:
        if self.fw is None:
            raise RuntimeError("Durable.attach was not called")
        return self.fw

    # --- kernel ------------------------------------------------------------------------

    def reconcile(self, migrate: bool = True, from_empty: bool = False) -> ReconcileResult:
        """Kernel <-> ledger, both ways. `from_empty`: an empty store is deliberate (the
        kernel entries are removed, not adopted)."""
        fw = self._firewall()
        result = sync.reconcile(
            fw.ledger,
            refuse=fw.refuse,
            keep_foreign=self.config.security.keep_foreign_entries,
            migrate=migrate,
            adopt_if_empty=not from_empty,
        )
        self.last_reconcile = result
        level = logging.WARNING if result.changed() or result.errors else logging.INFO
        log.log(level, "reconcile: %s", result.summary())
        for err in result.errors[:5]:
            log.error("reconcile: %s", err)
        return result

    def drift_check(self) -> ReconcileResult:
        fw = self._firewall()
        result = sync.drift_check(
            fw.ledger, refuse=fw.refuse, keep_foreign=self.config.security.keep_foreign_entries
        )
        self.last_drift = result
        for err in result.errors[:5]:
            log.error("drift check: %s", err)
        return result

    def seen_ids(self, ids: list[str]) -> set[str]:
        """The ids among `ids` the store already processed (one query per 500)."""
        return self.store.processed_ids(ids)

    # --- periodic ----------------------------------------------------------------------

    def tick(self) -> None:
        """Prune history, re-arm long bans, check drift, write the backlog (time-gated;
        call from the loop)."""
        fw = self._firewall()
        now_m = time.monotonic()
        if self.degraded:
            self._retry_real()
        fw.ledger.flush_backlog()
        if now_m >= self._next_prune:
            self._next_prune = now_m + PRUNE_SECONDS
            try:
                self.store.prune(
                    time.time(),
                    recidive_keep=max(self.config.security.recidive.window, 86400.0),
                    decisions_keep=DECISIONS_KEEP,
                )
            except StoreError as exc:
                fw.ledger.loud("store", "state store cannot prune: %s", exc)
        if now_m >= self._next_rearm:
            self._next_rearm = now_m + REARM_SECONDS
            self.rearm()
        if fw.kernel_enabled and now_m >= self._next_drift:
            self._next_drift = now_m + max(1.0, self.config.security.drift_check_interval)
            try:
                self.drift_check()
            except FirewallError as exc:
                log.error("drift check failed: %s", exc)

    def rearm(self) -> int:
        fw = self._firewall()
        if not fw.kernel_enabled:
            return 0
        now = time.time()
        count = rec.rearm(fw.kernel, fw.ledger.active(now), now)
        self.rearmed += count
        if count:
            log.info("re-armed %d bans longer than the kernel's largest timeout", count)
        return count

    # --- control ops -------------------------------------------------------------------

    def bind(self, table: OpTable) -> None:
        """Bind the durable-state ops; `stats` (bound by ControlOps) gains our counters."""
        add_counters(table, self.fill)
        table.bind(ops.RECONCILE, self.op_reconcile)
        table.bind(ops.DRIFT_CHECK, self.op_drift_check)
        table.bind(ops.LISTS_SNAPSHOT, self.op_lists_snapshot)
        table.bind(ops.BANS_EXPORT, lambda req: self.store.export_json())
        table.bind(ops.BANS_IMPORT, self.op_bans_import)

    def report_counters(self) -> tuple[int, int, int]:
        """chanDaemon reports (sent, failed, pending)."""
        if self.reporter is None:
            return 0, 0, 0
        s = self.reporter.stats()
        return int(s["reportsSent"]), int(s["reportsFailed"]), int(s["reportsPending"])

    def fill(self, out: FirewallStats) -> None:
        """Our counters in the `stats` reply (the Go names of reports, and snake_case)."""
        sent, failed, pending = self.report_counters()
        out.reportsSent = out.reports_sent = sent
        out.reportsFailed = out.reports_failed = failed
        out.reportsPending = out.reports_pending = pending
        out.store_duplicates = self._firewall().ledger.store_duplicates
        out.acks_sent = self.acks.sent if self.acks else 0
        out.acks_dropped = self.acks.dropped if self.acks else 0
        out.rearmed = self.rearmed
        out.store_degraded = 1 if self.degraded else 0
        out.last_reconcile = self.last_reconcile

    def _kernel_managed(self) -> Firewall:
        fw = self._firewall()
        if not fw.kernel_enabled:
            raise ControlError("auto_block_enabled is false: the kernel is not managed", 409)
        return fw

    def op_reconcile(self, req: ReconcileRequest) -> ReconcileResult:
        self._kernel_managed()
        try:
            return self.reconcile(from_empty=req.from_empty)
        except FirewallError as exc:
            raise ControlError(f"firewall error: {exc}", 500) from None

    def op_drift_check(self, req: Empty) -> ReconcileResult:
        self._kernel_managed()
        try:
            return self.drift_check()
        except FirewallError as exc:
            raise ControlError(f"firewall error: {exc}", 500) from None

    def op_lists_snapshot(self, req: SnapshotRequest) -> ListsSnapshot:
        """Everything a worker mirrors: whitelist, untrusted patterns and the active bans
        (so a worker that missed an unban on PUB/SUB stops treating it as banned)."""
        fw = self._firewall()
        now = time.time()
        shard, shards = req.shard, req.shards
        bans = fw.ledger.active(now)
        if shard is not None and shards is not None and shards > 0:
            # Prefix bans go to every worker; an address only to the worker owning it.
            bans = [e for e in bans if "/" in e.ip or shard_of(e.ip, shards) in (shard, None)]
        return ListsSnapshot(
            pid=os.getpid(),
            whitelist=[(e.ip, e.expires_at) for e in fw.lists.whitelist.active(now)],
            untrusted=fw.lists.untrusted.list(),
            blacklist=[(e.ip, e.expires_at) for e in bans],
        )

    def op_bans_import(self, req: ImportRequest) -> ImportResult:
        fw = self._firewall()
        data = req.data
        try:
            check_import(fw.kernel, fw.refuse, data)
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
        result = ImportResult(imported=count)
        if fw.kernel_enabled:
            result.reconcile = self.reconcile(migrate=False)
        log.info("imported %d entries", count)
        return result

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.stop()
        if self.acks is not None:
            self.acks.close()
        self.store.close()


def check_import(kernel: KernelBackend, is_trusted: Any, data: Any) -> None:
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
            target = rec.parse_member(key)
            if target is None:
                continue
            elem = kernel.element(target)
        except ValueError:
            continue  # reported by the store's validation
        if is_trusted(elem):
            raise ImportDataError(
                f"import refused, nothing written: blacklist[{label!r}]: "
                f"{key} is in a trusted network, protected or whitelisted"
            )
