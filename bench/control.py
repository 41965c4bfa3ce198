"""Every control call the benchmarks make, in one place.

The benchmarks ask the running processes for their counters over the control plane
(ZeroMQ REQ/REP). They go through these functions only, so a change of the control
plane (ops, request or reply types) is made here once. A refused request (`ok` false)
raises ControlRefused; no answer in time raises shared.control.PeerUnavailable.
"""

from __future__ import annotations

import os
from typing import Any

from shared import addresses
from shared.control import PeerUnavailable, request

__all__ = [
    "ControlRefused",
    "PeerUnavailable",
    "blacklisted",
    "firewall_listening",
    "firewall_ping",
    "firewall_stats",
    "supervisor_children",
    "supervisor_stats",
    "worker_stats",
]


class ControlRefused(RuntimeError):
    """The process answered, but refused the request."""


def _ask(endpoint: str, op: str, args: dict[str, Any] | None, timeout: float) -> Any:
    reply = request(endpoint, op, args, timeout=timeout)
    if not reply.ok:
        raise ControlRefused(f"{endpoint} refused {op!r}: {reply.error}")
    return reply.data


def firewall_listening(runtime_dir: str) -> bool:
    """Whether the firewall's control socket exists yet (no request is made)."""
    return os.path.exists(addresses.ipc_path(addresses.firewall_control(runtime_dir)))


def firewall_ping(runtime_dir: str, timeout: float = 2.0) -> None:
    """Returns once the firewall answers (after its start-up reconcile)."""
    _ask(addresses.firewall_control(runtime_dir), "ping", None, timeout)


def firewall_stats(runtime_dir: str, timeout: float = 2.0) -> dict[str, Any]:
    return dict(_ask(addresses.firewall_control(runtime_dir), "stats", None, timeout))


def blacklisted(runtime_dir: str, ip: str, timeout: float = 2.0) -> bool:
    """Whether the firewall holds a ban for `ip`."""
    data = _ask(addresses.firewall_control(runtime_dir), "blacklist_get", {"ip": ip}, timeout)
    return bool(data["blacklisted"])


def supervisor_stats(runtime_dir: str, timeout: float = 2.0) -> dict[str, Any]:
    return dict(_ask(addresses.supervisor_control(runtime_dir), "stats", None, timeout))


def supervisor_children(runtime_dir: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The supervisor's child processes: one dict (name, pid, ...) each."""
    return list(_ask(addresses.supervisor_control(runtime_dir), "processes", None, timeout))


def worker_stats(runtime_dir: str, index: int, timeout: float = 2.0) -> dict[str, Any]:
    return dict(_ask(addresses.worker_control(runtime_dir, index), "stats", None, timeout))
