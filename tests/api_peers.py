"""Test harness for the API: peer stand-ins and a real uvicorn server on a free port.

A stand-in is a thread serving a real ZeroMQ REP socket on the peer's ipc endpoint with
shared.control.dispatch, returning the documented contract shapes. It records every op it
receives, so tests can prove that a refused request never reached it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import uvicorn
import zmq

from fsguard_api.app import create_app
from fsguard_api.process import Server, serve
from shared import addresses
from shared.config import Config, worker_count
from shared.control import dispatch
from shared.messages import ControlRequest, decode
from shared.ops import firewall as fw_ops
from shared.ops import supervisor as sup_ops
from shared.ops import worker
from shared.ops.base import Empty, OpTable
from shared.ops.common import WhitelistEntry
from shared.ops.firewall import FIREWALL
from shared.ops.firewall_bans import (
    BanRequest,
    BanResult,
    BlacklistEntry,
    FirewallStatus,
    IptablesInfo,
)
from shared.ops.supervisor import SUPERVISOR, CommandResult, SupervisorEslStats
from shared.ops.worker import WORKER, WorkerStats

# --- contract shapes ---------------------------------------------------------------

ESL_STATS: dict[str, Any] = {
    "connected": True,
    "host": "127.0.0.1",
    "port": "8021",
    "connectionAttempts": 0,
    "connectionErrors": 2,
    "eventsQueued": 1500,
    "eventsDropped": 3,
    "workerCount": 2,
    "queueLength": 7,
    "queueCapacity": 16384,
    "logLevel": "info",
}

BLACKLIST: dict[str, Any] = {
    "203.0.113.9": {
        "ip": "203.0.113.9",
        "addedAt": "2025-01-02T03:04:05.123456789Z",
        "expiresAt": "2025-01-02T04:04:05.123456789Z",
        "reason": "Exceeded failed registration attempts (5)",
        "failCount": 5,
        "permanent": False,
        "rule": "failed_auth",  # fsguard-only field: must not leak into the Go shape
    },
    "2001:db8::1": {
        "ip": "2001:db8::1",
        "addedAt": "2025-01-02T03:04:05Z",
        "expiresAt": "0001-01-01T00:00:00Z",
        "reason": "manual",
        "failCount": 0,
        "permanent": True,
    },
}

IPTABLES: dict[str, Any] = {
    "chain": "INPUT",
    "ipset": "freeswitch-security",
    "blockedIps": ["203.0.113.9"],
    "count": 1,
}

FIREWALL_STATUS: dict[str, Any] = {"whitelistCount": 4, "blacklistCount": 2}


def supervisor_handlers(esl_response: str = "UP 0 years, 0 days") -> OpTable:
    """The supervisor stand-in's typed ops (the ones the API's routes ask)."""
    table = OpTable(SUPERVISOR)
    table.bind(sup_ops.ESL_STATS, lambda _: SupervisorEslStats(**ESL_STATS))
    table.bind(sup_ops.RECONNECT, lambda _: Empty())
    table.bind(sup_ops.ESL_COMMAND,
               lambda req: CommandResult(command=req.command, response=esl_response))  # fmt: skip
    return table


def whitelist_entry(ip: str, permanent: bool = False) -> dict[str, Any]:
    return {"ip": ip, "addedAt": "2025-01-02T03:04:05Z",
            "expiresAt": "0001-01-01T00:00:00Z" if permanent else "2025-01-03T03:04:05Z",
            "lastSeen": "2025-01-02T03:04:05Z", "userId": "1001", "domain": "example.com",
            "permanent": permanent}  # fmt: skip


# Manual entries (the firewall's) and each worker's learned ones; 192.0.2.1 is in both.
MANUAL_WHITELIST = [f"192.0.2.{i}" for i in range(1, 5)]
LEARNED_WHITELIST = ["192.0.2.1", "198.51.100.7"]
WHITELIST_TOTAL = len(set(MANUAL_WHITELIST) | set(LEARNED_WHITELIST))  # 5, as Go counts


def worker_table(index: int, processed: int) -> OpTable:
    """A worker's typed ops: its stats and its learned whitelist."""
    learned = {ip: msgspec.convert(whitelist_entry(ip), WhitelistEntry) for ip in LEARNED_WHITELIST}
    table = OpTable(WORKER)
    table.bind(
        worker.STATS, lambda r: WorkerStats(index=index, pid=1000 + index, processed=processed,
                                            tracked_ips=3)
    )  # fmt: skip
    table.bind(worker.WHITELIST, lambda r: dict(learned))
    return table


def _ban(req: BanRequest) -> BanResult:
    entry = BlacklistEntry(ip=req.ip, addedAt="2025-01-02T03:04:05Z",
                           expiresAt="2025-01-02T04:04:05Z", reason=req.reason, failCount=0,
                           permanent=req.permanent)  # fmt: skip
    return BanResult(status="success", message=f"IP {req.ip} added", entry=entry)


def firewall_table() -> OpTable:
    """The firewall's stand-in: typed handlers answering the contract shapes above."""
    table = OpTable(FIREWALL)
    table.bind(fw_ops.STATUS, lambda req: msgspec.convert(FIREWALL_STATUS, FirewallStatus))
    table.bind(fw_ops.WHITELIST, lambda req: {
        ip: msgspec.convert(whitelist_entry(ip, True), WhitelistEntry) for ip in MANUAL_WHITELIST
    })  # fmt: skip
    # the fsguard-only "rule" of BLACKLIST is not in the contract: dropped here
    table.bind(fw_ops.BLACKLIST, lambda req: msgspec.convert(BLACKLIST, dict[str, BlacklistEntry]))
    table.bind(fw_ops.IPTABLES, lambda req: msgspec.convert(IPTABLES, IptablesInfo))
    table.bind(fw_ops.BAN, _ban)
    return table


# --- stand-in peer -------------------------------------------------------------------


class StandIn:
    """A REP server thread on `endpoint`. `delay` seconds before each answer (slow peer)."""

    def __init__(
        self, endpoint: str, handlers: OpTable, delay: float = 0.0
    ) -> None:
        self.endpoint = endpoint
        self.handlers = handlers
        self.delay = delay
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"standin {endpoint}", daemon=True)

    @property
    def ops(self) -> list[str]:
        return [op for op, _ in self.received]

    def start(self) -> StandIn:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError(f"stand-in on {self.endpoint} did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(50, zmq.POLLIN):
                    continue
                raw = sock.recv()
                req = decode(raw)
                if isinstance(req, ControlRequest):
                    self.received.append((req.op, dict(req.args)))
                if self.delay and self._stop.wait(self.delay):
                    break
                sock.send(dispatch(self.handlers, raw))
        finally:
            sock.close()
            ctx.term()
            path = addresses.ipc_path(self.endpoint)
            if os.path.exists(path):
                os.unlink(path)


class Peers:
    """Stand-ins for supervisor, every worker and firewall of one runtime dir."""

    def __init__(self, config: Config) -> None:
        rd = config.paths.runtime_dir
        self.supervisor = StandIn(addresses.supervisor_control(rd), supervisor_handlers())
        self.workers = [
            StandIn(addresses.worker_control(rd, i), worker_table(i, 100 * (i + 1)))
            for i in range(worker_count(config))
        ]
        self.firewall = StandIn(addresses.firewall_control(rd), firewall_table())

    def all(self) -> list[StandIn]:
        return [self.supervisor, *self.workers, self.firewall]

    def start(self, *, skip: Callable[[StandIn], bool] = lambda s: False) -> Peers:
        for peer in self.all():
            if not skip(peer):
                peer.start()
        return self

    def stop(self) -> None:
        for peer in self.all():
            if peer._thread.is_alive():
                peer.stop()


# --- config and server -------------------------------------------------------------------


@contextmanager
def runtime_dir() -> Iterator[str]:
    """A short temp dir: ipc:// paths must stay under the ~107-byte sun_path limit."""
    path = tempfile.mkdtemp(prefix="fsg-api-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_config(run_dir: str, **security: Any) -> Config:
    """Two workers, loopback allowed, plus overrides. `server`/`chandaemon` dicts accepted."""
    server = security.pop("server", {})
    chandaemon = {"allowed_api_ips": ["127.0.0.1", "::1"], **security.pop("chandaemon", {})}
    raw = {
        "server": server,
        # state_dir next to the sockets: audited API calls must never write /var/lib/fsguard.
        "paths": {"runtime_dir": run_dir, "state_dir": os.path.join(run_dir, "state")},
        "workers": {"count": 2},
        "security": {"chandaemon": chandaemon, **security},
    }
    return msgspec.convert(raw, type=Config)


class ApiServer:
    """The real API app in uvicorn, on a loopback port, in a background thread."""

    def __init__(self, config: Config, peer_timeout: float = 2.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        uv_config = uvicorn.Config(
            create_app(config, peer_timeout=peer_timeout),
            proxy_headers=False,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = Server(uv_config)
        self._thread = threading.Thread(target=self._run, name="api server", daemon=True)

    def _run(self) -> None:
        asyncio.run(serve(self.server, [self.sock]))

    def start(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("API server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.sock.close()


@contextmanager
def running(config: Config, peer_timeout: float = 2.0) -> Iterator[ApiServer]:
    server = ApiServer(config, peer_timeout).start()
    try:
        yield server
    finally:
        server.stop()
