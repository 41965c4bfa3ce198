"""The supervisor process: owns the ESL connection, fans events to the workers,
runs ESL commands for the others, and keeps its children alive.

`fsguard supervisor` manages the workers only (systemd runs the firewall and the
API as their own units); `fsguard run` also manages the firewall and the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from fsguard_supervisor import takeover
from fsguard_supervisor.children import EXIT_FATAL, Child, ChildSet, child_argv
from fsguard_supervisor.dispatcher import EventDispatcher
from fsguard_supervisor.esl_client import EslClient
from fsguard_supervisor.gateways import GatewayWatch
from fsguard_supervisor.kills import KillQueue
from fsguard_supervisor.reload import Reloader
from fsguard_supervisor.supervisor_control import control_loop
from fsguard_supervisor.tasks import TaskSupervisor
from shared import addresses, sdnotify
from shared.audit import AuditLog
from shared.config import Config, worker_count
from shared.control import ControlError, PeerReplyInvalid, PeerUnavailable, acall
from shared.esl_hardening import log_esl_warnings
from shared.logs import LogRateLimiter
from shared.messages import KillCall, decode
from shared.ops import firewall as fw_ops
from shared.ops import worker
from shared.ops.base import Empty

log = logging.getLogger(__name__)

STOP_TIMEOUT = 8.0
READY_TIMEOUT = 15.0
LOG_SUMMARY_SECONDS = 10.0  # per-event warnings: one per kind per interval, then a summary


class Supervisor:
    def __init__(self, config: Config, config_path: str, *, manage_all: bool) -> None:
        self.config = config
        self.runtime_dir = config.paths.runtime_dir
        self.workers = worker_count(config)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.actx = zmq.asyncio.Context.shadow(self.ctx.underlying)
        self.dispatcher: EventDispatcher | None = None
        self.log_level = config.security.esl_log_level
        sec = config.security
        self.esl = EslClient(
            sec.esl_host,
            sec.esl_port,
            sec.esl_password,
            on_events=self._on_events,
            on_connection_change=self._on_connection_change,
            base_backoff=sec.reconnect_backoff,
        )
        self.gateways = GatewayWatch(
            self.esl.api, self._push_gateways, lambda: self.esl.stats.connected,
            sec.gateway_refresh_interval,
        )  # fmt: skip
        children: list[Child] = []
        if manage_all:
            children.append(Child("firewall", "firewall", child_argv("firewall", config_path)))
        for index in range(self.workers):
            children.append(
                Child(f"worker-{index}", "worker",
                      child_argv("worker", config_path, "--index", str(index)))
            )
        if manage_all:
            children.append(Child("api", "api", child_argv("api", config_path)))
        if manage_all and config.security.crowdsec.enabled:
            # CrowdSec LAPI connector (push/pull): HTTP stays out of the firewall's loop.
            children.append(Child("fleet", "fleet", child_argv("fleet", config_path)))
        self.children = ChildSet(children)
        self.manage_all = manage_all
        self.worker_processed = [0] * self.workers
        self.started = time.time()
        self.audit = AuditLog.null("supervisor")  # opened by run()
        self.log_limiter = LogRateLimiter(LOG_SUMMARY_SECONDS)
        self.kills = KillQueue(self.esl.api, lambda: self.audit, self.log_limiter)
        self.tasks = TaskSupervisor()
        self._stop = asyncio.Event()
        self.reloader = Reloader(self, config_path)  # SIGHUP and the `reload` op (reload.py)

    # --- hot path ---------------------------------------------------------------
    def _on_events(self, bodies: list[bytes], read_ts: float) -> None:
        assert self.dispatcher is not None
        self.dispatcher.dispatch(bodies, read_ts)

    def _on_connection_change(self, connected: bool) -> None:
        if connected:
            self.gateways.trigger()  # protected sources: ask for the gateways at connect
            log.info("connected to FreeSWITCH ESL at %s:%s",
                     self.config.security.esl_host, self.config.security.esl_port)
        else:
            log.warning("ESL connection lost")

    async def _control_loop(self) -> None:
        await control_loop(self)

    # --- actions from workers ------------------------------------------------------
    async def _actions_loop(self) -> None:
        sock = self.actx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(addresses.supervisor_actions(self.runtime_dir))
        try:
            while True:
                raw = await sock.recv()
                try:
                    msg = decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    if self.log_limiter.allow("undecodable action"):
                        log.warning("undecodable action dropped")
                    continue
                if isinstance(msg, KillCall):
                    self.kills.submit(msg)
        finally:
            sock.close(linger=0)

    def log_summaries(self) -> None:
        for key, count in self.log_limiter.take_suppressed().items():
            log.warning("%d more '%s' lines suppressed in the last %.0fs",
                        count, key, LOG_SUMMARY_SECONDS)

    # --- children -------------------------------------------------------------------
    async def _reap_loop(self) -> None:
        last_summary = time.monotonic()
        while True:
            restarted = self.children.reap()
            if restarted:
                self._write_pidfile()
            for child in restarted:
                if child.role == "worker" and self.dispatcher is not None:
                    index = int(child.name.split("-")[1])
                    self.dispatcher.reset_worker(index)
                    self.worker_processed[index] = 0
                    asyncio.get_running_loop().call_later(2.0, self.gateways.trigger)
            if self.children.fatal is not None:
                self._stop.set()  # e.g. the firewall's state store is unusable (exit 78)
            now = time.monotonic()
            if now - last_summary >= LOG_SUMMARY_SECONDS:
                last_summary = now
                self.log_summaries()
            await asyncio.sleep(0.1)

    async def _push_gateways(self, ips: list[str]) -> None:
        async def one(index: int) -> None:
            endpoint = addresses.worker_control(self.runtime_dir, index)
            try:
                await acall(endpoint, worker.GATEWAYS, req, 1.0, ctx=self.actx)
            except PeerUnavailable:  # a restarting worker: next refresh
                pass
            except (ControlError, PeerReplyInvalid) as exc:
                if self.log_limiter.allow("gateways push"):
                    log.error("worker %d refused the gateways: %s", index, exc)

        req = worker.GatewaysRequest(addresses=ips)

        await asyncio.gather(*(one(i) for i in range(self.workers)))

    async def _stats_loop(self) -> None:
        """Refresh the workers' processed counts: every second, or every 100 ms while a
        worker holds over a quarter of its byte bound (the acks release that bound)."""
        while True:
            await self._refresh_worker_counts()
            d = self.dispatcher
            busy = d is not None and max(d.in_flight_bytes, default=0) > d.queue_bytes // 4
            await asyncio.sleep(0.1 if busy else 1.0)

    async def _refresh_worker_counts(self) -> None:
        async def one(index: int) -> None:
            try:
                stats = await acall(
                    addresses.worker_control(self.runtime_dir, index), worker.STATS, Empty(),
                    timeout=0.5, ctx=self.actx,
                )  # fmt: skip
            except (PeerUnavailable, ControlError, PeerReplyInvalid):
                return
            self.worker_processed[index] = stats.processed
            if self.dispatcher is not None:
                self.dispatcher.acknowledge(index, stats.processed)

        await asyncio.gather(*(one(i) for i in range(self.workers)))

    async def _wait_ready(self) -> bool:
        """Wait until every worker (and the firewall, when managed) answers a ping."""
        endpoints = [addresses.worker_control(self.runtime_dir, i) for i in range(self.workers)]
        deadline = time.monotonic() + READY_TIMEOUT
        pending = list(endpoints)
        while pending and time.monotonic() < deadline:
            still = []
            for endpoint in pending:
                try:
                    await acall(endpoint, worker.PING, Empty(), timeout=0.3, ctx=self.actx)
                except (PeerUnavailable, ControlError, PeerReplyInvalid):
                    still.append(endpoint)
            pending = still
            if self.children.reap():
                self._write_pidfile()
            if pending:
                await asyncio.sleep(0.1)
        if pending:
            log.error("workers not ready after %.0fs: %s", READY_TIMEOUT, pending)
        return not pending

    def _write_pidfile(self) -> None:
        try:
            takeover.write_pidfile(self.runtime_dir, self.children.running())
        except OSError as exc:
            if self.log_limiter.allow("pidfile"):
                log.error("cannot write %s: %s", takeover.PIDFILE, exc)

    def _take_over(self) -> bool:
        """Clear what a dead tree left behind; False if a live tree owns the runtime dir."""
        mine = [(f"worker-{i}", addresses.worker_control(self.runtime_dir, i), worker.PING)
                for i in range(self.workers)]  # fmt: skip
        if self.manage_all:
            mine.append(("firewall", addresses.firewall_control(self.runtime_dir), fw_ops.PING))
        try:
            takeover.clear_leftovers(self.runtime_dir)
            api_port = self.config.server.port if self.manage_all else None
            takeover.clear_orphans(mine, api_port)
        except takeover.AnotherSupervisor as exc:
            log.error("not starting: %s", exc)
            return False
        return True

    async def run(self) -> int:
        """The main loop (gunicorn's arbiter): start, wait for SIGTERM/SIGINT or a fatal
        child, stop in order. The work happens in the supervised tasks `_start` launches."""
        if not await self._start():
            return 1
        log.info("supervisor running with %d workers", self.workers)
        await self._stop.wait()
        await self._shutdown()
        return EXIT_FATAL if self.children.fatal is not None else 0

    async def _start(self) -> bool:
        """Take over the runtime dir, start the children and the loops; False if another
        live tree owns the runtime dir."""
        _raise_fd_limit()
        os.makedirs(self.runtime_dir, mode=0o750, exist_ok=True)
        if not await asyncio.to_thread(self._take_over):
            return False
        self.audit = AuditLog(self.config, "supervisor")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reloader.on_sighup)
        self.dispatcher = EventDispatcher(
            self.ctx, self.runtime_dir, self.workers, self.config.workers.queue_size,
            self.config.workers.queue_bytes,
        )
        self.tasks.start("control", self._control_loop)
        self.tasks.start("actions", self._actions_loop)
        self.kills.start(self.tasks)
        self.children.start_all()
        self._write_pidfile()
        await self._wait_ready()
        self.tasks.start("reaper", self._reap_loop)
        self.tasks.start("worker-stats", self._stats_loop)
        log_esl_warnings(self.config, log)
        self.tasks.start("esl", self.esl.run)
        self.tasks.start("gateways", self.gateways.run)
        _notify_ready()
        return True

    async def _shutdown(self) -> None:
        """ESL first (no new events), then the loops, then the children in order."""
        log.info("stopping")
        await self.esl.stop()
        await self.tasks.cancel_all()
        await asyncio.to_thread(
            self.children.stop, ["fleet", "api", "worker", "firewall"], STOP_TIMEOUT
        )
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.ctx.term()
        self.log_summaries()
        self.audit.close()
        self._cleanup_sockets()
        takeover.remove_pidfile(self.runtime_dir)
        log.info("stopped")

    def _cleanup_sockets(self) -> None:
        paths = [addresses.supervisor_control(self.runtime_dir),
                 addresses.supervisor_actions(self.runtime_dir)]
        paths += [addresses.worker_events(self.runtime_dir, i) for i in range(self.workers)]
        for endpoint in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addresses.ipc_path(endpoint))


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (at most 65536): EMFILE ends loops (logged and
    restarted) but in libzmq's accept() it aborts the process (libzmq 4.3.5 ipc_listener)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _notify_ready() -> None:
    sdnotify.ready()


def main(config: Config, config_path: str, *, manage_all: bool) -> int:
    return asyncio.run(Supervisor(config, config_path, manage_all=manage_all).run())
