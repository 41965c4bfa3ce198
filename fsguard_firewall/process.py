"""The firewall process: sockets and the loop around the ban ledger (the "server").

PULL ban decisions -> Firewall (policy) -> BanLedger (kernel, store, acks) -> PUB list
changes. A REP socket answers control ops. Everything about bans is in firewall.py,
ledger.py and durable.py; this module only moves bytes and keeps time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import msgspec
import zmq

from shared import addresses, sdnotify
from shared.audit import AuditLog
from shared.config import Config
from shared.control import ControlError, PeerReplyInvalid, PeerUnavailable, call, dispatch
from shared.messages import BanDecision, decode, encode
from shared.ops.base import Empty, OpTable
from shared.ops.firewall import FIREWALL, PING, RELOAD
from shared.stop import StopFlag

from .backend import FirewallError, KernelBackend
from .backends import make_backend
from .degraded import unwritable
from .durable import EX_CONFIG, Durable
from .entries import BanEntry, MemoryBanStore
from .firewall import LOG_SUMMARY_SECONDS, Firewall
from .fleet import FleetState
from .reconfigure import handler as reconfigure_handler
from .store import StoreError
from .teardown import teardown

__all__ = ["BanEntry", "Firewall", "MemoryBanStore", "main", "make_kernel"]

log = logging.getLogger("fsguard.firewall")

BATCH_MAX = 1000
# A batch closes as soon as no decision is queued: waiting for more added its full length
# to every ban's time to the kernel. Under load batches still form by themselves (the
# decisions that arrive while one batch is applied make the next one).
BATCH_IDLE_MS = 0
POLL_MS = 100  # main loop wake-up (signal latency, expiry sweep)
SWEEP_SECONDS = 5.0
RETRY_TICK_SECONDS = 0.5  # how often refused bans are looked at (each has its own backoff)


# --- process main loop ---------------------------------------------------------------


def _receive_batch(pull: zmq.Socket[bytes], fw: Firewall) -> list[BanDecision]:
    """Drain up to BATCH_MAX queued decisions (waiting BATCH_IDLE_MS for each next one)."""
    batch: list[BanDecision] = []
    while len(batch) < BATCH_MAX:
        try:
            raw = pull.recv(zmq.NOBLOCK)
        except zmq.Again:
            if not pull.poll(BATCH_IDLE_MS, zmq.POLLIN):
                break
            continue
        try:
            msg = decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            fw.stats.decode_errors += 1
            if fw.log_limiter.allow("undecodable decision"):
                log.warning("undecodable decision (%d bytes): %s", len(raw), exc)
            continue
        if not isinstance(msg, BanDecision):
            fw.stats.decode_errors += 1
            log.warning("unexpected message on decisions socket: %s", type(msg).__name__)
            continue
        batch.append(msg)
    return batch


def make_kernel(config: Config) -> KernelBackend:
    """The configured backend: ipset + iptables or nftables (backends.py)."""
    return make_backend(config)


def _prepare_runtime_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o750, exist_ok=True)
        os.chmod(path, 0o750)


def _already_running(control: str) -> bool:
    """A live peer on our control socket (binding an ipc path would silently steal it)."""
    if not os.path.exists(addresses.ipc_path(control)):
        return False
    try:
        call(control, PING, Empty(), timeout=0.5)
    except (PeerUnavailable, ControlError):
        return False
    except PeerReplyInvalid:
        return True  # something answers ok, if not in our words
    return True


def control_table(fw: Firewall, durable: Durable, fleet: FleetState) -> OpTable:
    """Every firewall op bound: the ban and list ops (audited ones wrapped), then the
    durable state's and the fleet's, which also add their counters to `stats`, and
    `reload` (reconfigure.py)."""
    table = OpTable(FIREWALL)
    fw.control.bind(table)
    durable.bind(table)
    fleet.bind(table)
    table.bind(RELOAD, reconfigure_handler(fw, durable))
    return table


def _remove_kernel_objects(config: Config, backend: str) -> None:
    """`security.remove_rules_on_stop`: a clean stop removes exactly what fsguard created.
    The bans stay in the store; the next start re-adds them with their remaining time."""
    result = teardown(config, backend)
    for line in result.errors:
        log.error("remove_rules_on_stop: %s", line)
    log.warning(
        "remove_rules_on_stop: removed %s; bans are NOT enforced until fsguard starts again",
        ", ".join(result.removed) or "nothing",
    )


def _open_store(config: Config) -> Durable | int:
    """The durable state, a scratch one if the state directory cannot be written, or the
    exit status: never a silent fresh start."""
    try:
        return Durable.open(config)
    except StoreError as exc:
        if not unwritable(exc, config.paths.state_dir):
            log.error("state store unusable: %s", exc)
            return 1 if "in use by another process" in str(exc) else EX_CONFIG
        try:
            return Durable.open_degraded(config, str(exc))  # detection goes on
        except (OSError, StoreError) as scratch_exc:
            log.error("state store unusable (%s), no scratch store either: %s", exc,
                      scratch_exc)  # fmt: skip
            return EX_CONFIG


class Sockets:
    """The firewall's sockets: decisions (PULL), list changes (PUB), control (REP)."""

    def __init__(self, runtime: str) -> None:
        self.endpoints = [
            addresses.firewall_decisions(runtime),
            addresses.firewall_lists(runtime),
            addresses.firewall_control(runtime),
        ]
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pub = self.ctx.socket(zmq.PUB)
        self.rep = self.ctx.socket(zmq.REP)
        for sock in (self.pull, self.pub, self.rep):
            sock.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.RCVHWM, 100_000)
        old_umask = os.umask(0o007)  # group (the API's) may connect; others may not
        try:
            for sock, endpoint in zip((self.pull, self.pub, self.rep), self.endpoints, strict=True):
                sock.bind(endpoint)
        finally:
            os.umask(old_umask)

    def close(self) -> None:
        for sock in (self.pull, self.pub, self.rep):
            sock.close(0)
        self.ctx.term()
        for endpoint in self.endpoints:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addresses.ipc_path(endpoint))


def _start(config: Config, kernel: KernelBackend, migrated: list[str], durable: Durable,
           socks: Sockets, audit: AuditLog) -> tuple[Firewall, FleetState]:  # fmt: skip
    """Wire the policy, the durable state and the fleet; bring the kernel back in line
    with the store (never a flush); tell the workers the firewall (re)started."""
    fw = Firewall(
        config,
        kernel,
        store=durable.bans,
        publish=lambda change: socks.pub.send(encode(change)),
        audit=audit,
    )
    durable.attach(fw, socks.ctx)
    fleet = FleetState(config, lambda: durable.store)  # CrowdSec outbox, remote decisions
    fleet.attach(fw)
    if config.security.auto_block_enabled:
        try:
            # store -> kernel and back. The sets were ensured (and migrated) before: one
            # structure check, which costs seconds with 100k nft elements.
            result = durable.reconcile(migrate=False)
            result.migrated = sorted({*migrated, *result.migrated})
        except FirewallError as exc:
            log.error("firewall reconcile failed: %s", exc)
    if durable.acks is not None:
        durable.acks.hello()
    return fw, fleet


def _serve(stop: StopFlag, socks: Sockets, table: OpTable, fw: Firewall, durable: Durable,
           fleet: FleetState) -> None:  # fmt: skip
    """The main loop: control requests, decision batches, retries, sweeps, summaries."""
    poller = zmq.Poller()
    poller.register(socks.pull, zmq.POLLIN)
    poller.register(socks.rep, zmq.POLLIN)
    next_sweep = time.monotonic() + SWEEP_SECONDS
    next_summary = time.monotonic() + LOG_SUMMARY_SECONDS
    next_retry = time.monotonic() + RETRY_TICK_SECONDS
    while not stop.requested:
        try:
            events = dict(poller.poll(POLL_MS))
            if socks.rep in events:
                socks.rep.send(dispatch(table, socks.rep.recv()))
            if socks.pull in events:
                batch = _receive_batch(socks.pull, fw)
                if batch:
                    fw.handle_batch(batch)  # acks go out from the ledger
            now = time.monotonic()
            if now >= next_retry:
                fw.retry_pending()
                next_retry = time.monotonic() + RETRY_TICK_SECONDS
            if now >= next_sweep:
                next_sweep = now + SWEEP_SECONDS
                fw.sweep()
                durable.tick()
                fleet.tick()
            if now >= next_summary:
                next_summary = now + LOG_SUMMARY_SECONDS
                fw.log_summaries()
        except StoreError as exc:  # writes go to the backlog; this was a read
            fw.ledger.loud("store-loop", "state store error, running on: %s", exc)


def main(config: Config) -> int:
    """Run the firewall process until SIGTERM/SIGINT. Returns the exit status."""
    runtime = config.paths.runtime_dir
    _prepare_runtime_dir(runtime)
    kernel = make_kernel(config)
    migrated: list[str] = []
    if config.security.auto_block_enabled:
        try:
            migrated = kernel.ensure()  # sets and rules exist (or the start fails here)
        except FirewallError as exc:
            log.error("firewall setup failed (%s backend): %s", kernel.kind, exc)
            return 1
    else:
        log.warning("auto_block_enabled is false: bans are recorded, the kernel is not touched")
    if _already_running(addresses.firewall_control(runtime)):
        log.error("another firewall answers on %s: not starting a second writer", runtime)
        return 1
    durable = _open_store(config)
    if isinstance(durable, int):
        return durable
    socks = Sockets(runtime)
    audit = AuditLog(config, "firewall")
    fw, fleet = _start(config, kernel, migrated, durable, socks, audit)
    stop = StopFlag()
    table = control_table(fw, durable, fleet)
    if table.missing():
        log.error("firewall ops without a handler: %s", ", ".join(table.missing()))
        return 1
    log.info(
        "firewall ready (pid %d, %s backend, dry_run=%s)", os.getpid(), kernel.kind, kernel.dry_run
    )
    sdnotify.ready()
    try:
        _serve(stop, socks, table, fw, durable, fleet)
    finally:
        fw.log_summaries()
        if config.security.remove_rules_on_stop and not kernel.dry_run:
            _remove_kernel_objects(config, kernel.kind)
        audit.close()
        durable.close()
        socks.close()
        log.info("firewall stopped")
    return 0
