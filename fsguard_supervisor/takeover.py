"""A supervisor's children die with it, and a new supervisor clears what a dead tree left.

Children: `arm_parent_death_signal()` (shared/roles.py) runs first thing in every child
(`python -m fsguard_supervisor.roles`): PR_SET_PDEATHSIG makes the kernel SIGKILL the
child when its parent dies (kill -9 included), and the check of `getppid()` against
FSGUARD_PARENT_PID closes the race of a parent dying before the prctl. The signal fires
when the *thread* that forked the child exits, so the supervisor starts children only
from its event-loop (main) thread.

Supervisor: `supervisor.pids` in the runtime dir records the supervisor and its
children (pid + kernel start time, so a reused pid is never mistaken for ours). A new
supervisor reads it first: a live recorded supervisor means another tree is running (it
refuses to start); otherwise every recorded child still alive is a leftover of a dead
tree (e.g. from a version without the death signal) and is stopped (SIGTERM, then
SIGKILL) before the new children start, freeing the ipc sockets, the firewall's store
lock and the API port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterable

from shared.ops.base import Empty, Op
from shared.ops.common import Ping

log = logging.getLogger(__name__)

PIDFILE = "supervisor.pids"
LEFTOVER_TERM_WAIT = 3.0


class AnotherSupervisor(Exception):
    """A live supervisor already owns this runtime dir."""


def _stat(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, ...); None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if gone or a zombie)."""
    fields = _stat(pid)
    if fields is None or fields[0] == b"Z":
        return None
    return int(fields[19])  # field 22 of stat(5); fields[0] is field 3


def _is_supervisor(pid: int) -> bool:
    """Whether `pid` is a live `fsguard run|supervisor` (by its command line)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return any(b"fsguard" in a for a in argv) and (b"run" in argv or b"supervisor" in argv)


def _alive(entry: dict[str, int]) -> bool:
    pid, started = entry.get("pid"), entry.get("start")
    return isinstance(pid, int) and pid > 0 and started is not None and start_time(pid) == started


def _stop(entries: list[dict[str, int]]) -> None:
    """SIGTERM, wait, SIGKILL, wait: each (pid, start time) that is still that process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for entry in entries:
            if _alive(entry):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry["pid"], sig)
        deadline = time.monotonic() + LEFTOVER_TERM_WAIT
        while time.monotonic() < deadline and any(_alive(e) for e in entries):
            time.sleep(0.05)


def write_pidfile(runtime_dir: str, children: Iterable[tuple[str, int]]) -> None:
    """Record this supervisor and its running children (atomic replace)."""
    me = os.getpid()
    doc = {"supervisor": {"pid": me, "start": start_time(me)},
           "children": [{"name": name, "pid": pid, "start": start_time(pid)}
                        for name, pid in children]}
    path = os.path.join(runtime_dir, PIDFILE)
    tmp = f"{path}.{me}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


def remove_pidfile(runtime_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(runtime_dir, PIDFILE))


def clear_leftovers(runtime_dir: str) -> list[str]:
    """Stop what a dead supervisor left behind; returns the names of the children stopped.

    Raises AnotherSupervisor when the recorded supervisor is still alive.
    """
    path = os.path.join(runtime_dir, PIDFILE)
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return []
    if not isinstance(doc, dict):
        return []
    sup = doc.get("supervisor")
    if isinstance(sup, dict) and sup.get("pid") != os.getpid() and _alive(sup):
        raise AnotherSupervisor(
            f"another fsguard supervisor (pid {sup['pid']}) runs with {runtime_dir}")
    children = doc.get("children")
    live = [c for c in children if isinstance(c, dict) and _alive(c)] if isinstance(
        children, list) else []
    _stop(live)
    names = [str(c.get("name", "?")) for c in live]
    if names:
        log.warning("a dead supervisor (pid %s) left %d children running: stopped %s",
                    sup.get("pid") if isinstance(sup, dict) else "?", len(names),
                    ", ".join(names))
    remove_pidfile(runtime_dir)
    return names


def clear_orphans(
    endpoints: Iterable[tuple[str, str, Op[Empty, Ping]]], api_port: int | None = None
) -> list[str]:
    """Stop role processes of a dead tree: those answering on our control endpoints, and
    an `fsguard api` listening on our API port, whose parent is not a live supervisor.

    The fallback for a tree that left no pidfile (an older version). Raises
    AnotherSupervisor when such a process's parent is a live fsguard supervisor.
    """
    from shared.control import ControlError, PeerReplyInvalid, PeerUnavailable, call

    found: list[tuple[str, int]] = []
    for name, endpoint, ping in endpoints:
        try:
            pid = call(endpoint, ping, Empty(), timeout=0.3).pid
        except (PeerUnavailable, ControlError, PeerReplyInvalid):
            continue
        if pid > 0:
            found.append((name, pid))
    if api_port is not None:
        found += [("api", pid) for pid in _port_owners(api_port) if _is_role(pid, b"api")]
    stopped: list[str] = []
    for name, pid in found:
        fields = _stat(pid)
        if fields is None or int(fields[1]) == os.getpid():
            continue
        ppid = int(fields[1])
        if _is_supervisor(ppid):
            raise AnotherSupervisor(f"{name} (pid {pid}) belongs to supervisor pid {ppid}")
        _stop([{"pid": pid, "start": int(fields[19])}])
        log.warning("stopped an orphaned %s (pid %s) left by a dead supervisor", name, pid)
        stopped.append(name)
    return stopped


def _is_role(pid: int, role: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return role in argv and any(b"fsguard" in a for a in argv)


def _port_owners(port: int) -> list[int]:
    """Pids holding a TCP socket listening on `port` in this network namespace."""
    sockets: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                sockets.add(f"socket:[{f[9]}]")
    if not sockets:
        return []
    owners: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry.name}/fd/{fd}") in sockets:
                        owners.append(int(entry.name))
                        break
    return owners
