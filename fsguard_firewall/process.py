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

    endpoints = {
        "decisions": addresses.firewall_decisions(runtime),
        "lists": addresses.firewall_lists(runtime),
        "control": addresses.firewall_control(runtime),
    }
    if _already_running(endpoints["control"]):
        log.error("another firewall answers on %s: not starting a second writer", runtime)
        return 1
    try:
        durable = Durable.open(config)
    except StoreError as exc:  # never a silent fresh start
        if not unwritable(exc, config.paths.state_dir):
            log.error("state store unusable: %s", exc)
            return 1 if "in use by another process" in str(exc) else EX_CONFIG
        try:
            durable = Durable.open_degraded(config, str(exc))  # detection goes on
        except (OSError, StoreError) as scratch_exc:
            log.error("state store unusable (%s), no scratch store either: %s", exc,
                      scratch_exc)  # fmt: skip
            return EX_CONFIG
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pub = ctx.socket(zmq.PUB)
    rep = ctx.socket(zmq.REP)
    for sock in (pull, pub, rep):
        sock.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.RCVHWM, 100_000)
    old_umask = os.umask(0o007)  # group (the API's) may connect; others may not
    try:
        pull.bind(endpoints["decisions"])
        pub.bind(endpoints["lists"])
        rep.bind(endpoints["control"])
    finally:
        os.umask(old_umask)

    audit = AuditLog(config, "firewall")
    fw = Firewall(
        config,
        kernel,
        store=durable.bans,
        publish=lambda change: pub.send(encode(change)),
        audit=audit,
    )
    durable.attach(fw, ctx)
    fleet = FleetState(config, lambda: durable.store)  # CrowdSec outbox, remote decisions
    fleet.attach(fw)
    if config.security.auto_block_enabled:
        try:
            # store -> kernel and back; never flushes. The sets were ensured (and migrated)
            # above: one structure check, which costs seconds with 100k nft elements.
            result = durable.reconcile(migrate=False)
            result.migrated = sorted({*migrated, *result.migrated})
        except FirewallError as exc:
            log.error("firewall reconcile failed: %s", exc)
    if durable.acks is not None:
        durable.acks.hello()

    stop = StopFlag()

    table = control_table(fw, durable, fleet)
    if table.missing():
        log.error("firewall ops without a handler: %s", ", ".join(table.missing()))
        return 1
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(rep, zmq.POLLIN)
    log.info(
        "firewall ready (pid %d, %s backend, dry_run=%s)", os.getpid(), kernel.kind, kernel.dry_run
    )
    sdnotify.ready()
    next_sweep = time.monotonic() + SWEEP_SECONDS
    next_summary = time.monotonic() + LOG_SUMMARY_SECONDS
    next_retry = time.monotonic() + RETRY_TICK_SECONDS
    status = 0
    try:
        while not stop.requested:
            try:
                events = dict(poller.poll(POLL_MS))
                if rep in events:
                    rep.send(dispatch(table, rep.recv()))
                if pull in events:
                    batch = _receive_batch(pull, fw)
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
    finally:
        fw.log_summaries()
        if config.security.remove_rules_on_stop and not kernel.dry_run:
            _remove_kernel_objects(config, kernel.kind)
        audit.close()
        durable.close()
        for sock in (pull, pub, rep):
            sock.close(0)
        ctx.term()
        for endpoint in endpoints.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addresses.ipc_path(endpoint))
        log.info("firewall stopped")
    return status
