"""Every control call the benchmarks make, in one place.

The benchmarks ask the running processes for their counters over the typed control plane
(`shared.control.call` with the roles' ops). Counters come back as plain data (the reply
Struct's fields, `msgspec.to_builtins`), the way the bench results store them. A refused
request raises ControlRefused; no answer in time raises shared.control.PeerUnavailable.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from shared import addresses
from shared.control import ControlError, PeerUnavailable, call
from shared.ops import firewall as fw_ops
from shared.ops import supervisor as sup_ops
from shared.ops import worker as worker_ops
from shared.ops.base import Empty, Op, RepT, ReqT
from shared.ops.firewall_bans import IpRequest

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


def _ask(endpoint: str, op: Op[ReqT, RepT], req: ReqT, timeout: float) -> RepT:
    try:
        return call(endpoint, op, req, timeout=timeout)
    except ControlError as exc:
        raise ControlRefused(f"{endpoint} refused {op.name!r}: {exc}") from exc


def _plain(reply: Any) -> Any:
    return msgspec.to_builtins(reply)


def firewall_listening(runtime_dir: str) -> bool:
    """Whether the firewall's control socket exists yet (no request is made)."""
    return os.path.exists(addresses.ipc_path(addresses.firewall_control(runtime_dir)))


def firewall_ping(runtime_dir: str, timeout: float = 2.0) -> None:
    """Returns once the firewall answers (after its start-up reconcile)."""
    _ask(addresses.firewall_control(runtime_dir), fw_ops.PING, Empty(), timeout)


def firewall_stats(runtime_dir: str, timeout: float = 2.0) -> dict[str, Any]:
    reply = _ask(addresses.firewall_control(runtime_dir), fw_ops.STATS, Empty(), timeout)
    return dict(_plain(reply))


def blacklisted(runtime_dir: str, ip: str, timeout: float = 2.0) -> bool:
    """Whether the firewall holds a ban for `ip`."""
    endpoint = addresses.firewall_control(runtime_dir)
    return _ask(endpoint, fw_ops.BLACKLIST_GET, IpRequest(ip=ip), timeout).blacklisted


def supervisor_stats(runtime_dir: str, timeout: float = 2.0) -> dict[str, Any]:
    reply = _ask(addresses.supervisor_control(runtime_dir), sup_ops.STATS, Empty(), timeout)
    return dict(_plain(reply))


def supervisor_children(runtime_dir: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The supervisor's child processes: one dict (name, pid, ...) each."""
    endpoint = addresses.supervisor_control(runtime_dir)
    return list(_plain(_ask(endpoint, sup_ops.PROCESSES, Empty(), timeout)))


def worker_stats(runtime_dir: str, index: int, timeout: float = 2.0) -> dict[str, Any]:
    endpoint = addresses.worker_control(runtime_dir, index)
    return dict(_plain(_ask(endpoint, worker_ops.STATS, Empty(), timeout)))
