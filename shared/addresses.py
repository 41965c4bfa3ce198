"""ZeroMQ endpoints, all ipc:// sockets in the runtime directory.

Who binds what (the binder is the side that outlives the other):
- supervisor binds one PUSH per worker (events), PULL actions, REP control.
- each worker connects PULL events / PUSH actions / PUSH decisions / SUB lists, binds REP control
  and PULL acks (the firewall's DecisionAck).
- firewall binds PULL decisions, PUB lists, REP control.
- api connects REQ to every control socket, and binds REP control (api.control) for the
  supervisor's `reload` (fsguard_api/reload.py).
"""

from __future__ import annotations

import os


def _ipc(runtime_dir: str, name: str) -> str:
    return "ipc://" + os.path.join(runtime_dir, name)


def worker_events(runtime_dir: str, index: int) -> str:
    return _ipc(runtime_dir, f"worker-{index}.events")


def worker_control(runtime_dir: str, index: int) -> str:
    return _ipc(runtime_dir, f"worker-{index}.control")


def worker_acks(runtime_dir: str, index: int) -> str:
    """Worker *i* binds PULL; the firewall connects PUSH and sends DecisionAck."""
    return _ipc(runtime_dir, f"worker-{index}.acks")


def supervisor_actions(runtime_dir: str) -> str:
    return _ipc(runtime_dir, "supervisor.actions")


def supervisor_control(runtime_dir: str) -> str:
    return _ipc(runtime_dir, "supervisor.control")


def firewall_decisions(runtime_dir: str) -> str:
    return _ipc(runtime_dir, "firewall.decisions")


def firewall_lists(runtime_dir: str) -> str:
    return _ipc(runtime_dir, "firewall.lists")


def firewall_control(runtime_dir: str) -> str:
    return _ipc(runtime_dir, "firewall.control")


def api_control(runtime_dir: str) -> str:
    return _ipc(runtime_dir, "api.control")


def ipc_path(endpoint: str) -> str:
    """Filesystem path behind an ipc:// endpoint (for cleanup and permission checks)."""
    return endpoint.removeprefix("ipc://")
