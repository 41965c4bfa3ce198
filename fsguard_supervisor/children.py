"""Child processes of the supervisor, watched and restarted (gunicorn-arbiter style).

Each child is a fresh interpreter (`python -m fsguard_supervisor.roles <role> ...`),
never a fork of the asyncio supervisor. `reap()` is polled by the supervisor loop;
a child that exited unexpectedly is restarted after a backoff that doubles with
each quick death (capped), and every restart is counted per role.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from shared.ops.supervisor import ChildInfo
from shared.roles import PARENT_ENV

log = logging.getLogger(__name__)

RESTART_BACKOFF_MIN = 0.2
RESTART_BACKOFF_MAX = 10.0
# A child that lived this long resets its backoff.
STABLE_AFTER = 10.0
# A child exiting with this code (sysexits EX_CONFIG: e.g. the firewall's state store is
# corrupted or unwritable) is not restarted: the tree stops and exits with this code.
EXIT_FATAL = 78


@dataclass
class Child:
    name: str  # "firewall", "api", "worker-0" ...
    role: str  # "firewall", "api", "worker"
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_BACKOFF_MIN
    restart_at: float = 0.0  # monotonic time of the next start while waiting
    last_exit: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        # The child arms PR_SET_PDEATHSIG and checks it is still ours (shared/roles.py). Only
        # the event-loop thread starts children: the signal fires when the forking
        # *thread* exits.
        env[PARENT_ENV] = str(os.getpid())
        self.proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        log.info("started %s", self.name, extra={"child": self.name, "child_pid": self.proc.pid})


def child_argv(role: str, config_path: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fsguard_supervisor.roles", role, "--config", config_path, *extra]


class ChildSet:
    """The supervisor's children: start, reap and restart, stop in order."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = False
        self.fatal: Child | None = None  # a child that exited with EXIT_FATAL
        self.start_failures = 0

    def by_name(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def start_all(self) -> None:
        now = time.monotonic()
        for child in self.children:
            self._start(child, now)

    def _start(self, child: Child, now: float) -> bool:
        """Start `child`; a failure (OSError from Popen: a missing or unexecutable
        interpreter, EMFILE, ENOMEM) is logged, counted and retried after the backoff."""
        try:
            child.start()
        except OSError as exc:
            self.start_failures += 1
            child.restart_at = now + child.backoff
            log.error(
                "cannot start %s: %s; retrying in %.1fs", child.name, exc, child.backoff,
                extra={"child": child.name},
            )  # fmt: skip
            child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX)
            return False
        return True

    def reap(self) -> list[Child]:
        """Notice dead children and (re)start due ones. Returns the children restarted now."""
        now = time.monotonic()
        restarted: list[Child] = []
        for child in self.children:
            proc = child.proc
            if proc is not None:
                code = proc.poll()
                if code is None:
                    continue
                child.proc = None
                child.last_exit = code
                if self.stopping:
                    continue
                if code == EXIT_FATAL:
                    self.fatal = child
                    log.critical(
                        "%s exited with code %d (fatal: see its log); not restarting it",
                        child.name, code, extra={"child": child.name, "exit_code": code},
                    )  # fmt: skip
                    continue
                lived = now - child.started_at
                if lived >= STABLE_AFTER:
                    child.backoff = RESTART_BACKOFF_MIN
                child.restart_at = now + child.backoff
                log.error(
                    "%s exited with code %s after %.1fs; restarting in %.1fs",
                    child.name, code, lived, child.backoff,
                    extra={"child": child.name, "exit_code": code},
                )
                child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX)
            elif (not self.stopping and child is not self.fatal and now >= child.restart_at
                  and self._start(child, now)):
                child.restarts += 1
                restarted.append(child)
        return restarted

    def stop(self, order: list[str], timeout: float) -> None:
        """SIGTERM each group of roles in `order`, waiting for each; SIGKILL stragglers."""
        self.stopping = True
        deadline = time.monotonic() + timeout
        for role in order:
            group = [c for c in self.children if c.role == role and c.proc is not None]
            for child in group:
                assert child.proc is not None
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            for child in group:
                assert child.proc is not None
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    child.proc.wait(timeout=min(remaining, timeout / 2))
                except subprocess.TimeoutExpired:
                    log.error("%s did not stop in time; killing it", child.name)
                    child.proc.kill()
                    child.proc.wait()
                child.last_exit = child.proc.returncode
                child.proc = None

    def running(self) -> list[tuple[str, int]]:
        """(name, pid) of every running child."""
        return [(c.name, c.proc.pid) for c in self.children if c.proc is not None]

    def snapshot(self) -> list[ChildInfo]:
        return [
            ChildInfo(name=c.name, role=c.role, pid=c.pid, restarts=c.restarts,
                      lastExit=c.last_exit)
            for c in self.children
        ]  # fmt: skip
