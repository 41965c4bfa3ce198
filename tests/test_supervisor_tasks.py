"""The supervisor keeps supervising when its background loops fail for real (issue 10 §4).

Failures are provoked, not mocked: the tree runs from a venv in the test's tmp dir whose
interpreter is moved away (Popen then fails with FileNotFoundError), and the supervisor's
own RLIMIT_NOFILE is lowered from outside with prlimit(2) (ZeroMQ then fails with EMFILE).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsguard_supervisor.tasks import TaskSupervisor
from shared import addresses
from shared.control import PeerUnavailable
from shared.ops import worker
from shared.ops.supervisor import SupervisorStats
from tests.netns_helpers import requires_netns
from tests.system_helpers import (
    RunningSystem,
    answers,
    fsguard_config,
    running_fsguard,
    wait_for,
)


def _movable_python(tmp: Path) -> Path:
    """A venv interpreter in `tmp` that sees this venv's packages (and fsguard)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_dirs = list((venv / "lib").glob("python*/site-packages"))
    assert len(site_dirs) == 1, site_dirs
    ours = sysconfig.get_paths()["purelib"]
    (site_dirs[0] / "fsguard-test.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return venv / "bin" / "python"


def _config(tmp: Path, api_port: int) -> Callable[[int], dict[str, Any]]:
    return lambda port: fsguard_config(tmp, port, set_name=f"fsg-t{api_port}", api_port=api_port)


def _pid(system: RunningSystem, name: str) -> int | None:
    try:
        children = system.children()
    except (AssertionError, PeerUnavailable):
        return None
    pid = next(c.pid for c in children if c.name == name)
    return int(pid) if pid is not None else None


def _stats(system: RunningSystem) -> SupervisorStats:
    return system.supervisor_stats()


def _worker_answers(system: RunningSystem, index: int) -> bool:
    return answers(addresses.worker_control(system.runtime_dir, index), worker.PING, 1)


def _restarted(system: RunningSystem, name: str, old_pid: int) -> bool:
    pid = _pid(system, name)
    return pid is not None and pid != old_pid


def test_a_failing_loop_is_logged_counted_and_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The helper itself: a loop whose file is missing fails for real (FileNotFoundError),
    twice, is restarted each time, and runs once the file exists."""
    marker = tmp_path / "ready"
    runs: list[str] = []

    async def loop() -> None:
        runs.append("start")
        if len(runs) == 3:
            marker.write_text("x")
        marker.stat()  # raises until the third run
        runs.append("ran")
        await asyncio.Event().wait()  # a healthy loop never returns

    async def scenario() -> TaskSupervisor:
        tasks = TaskSupervisor(min_delay=0.01, max_delay=0.05)
        tasks.start("demo", loop)
        for _ in range(500):
            if "ran" in runs:
                break
            await asyncio.sleep(0.01)
        await tasks.cancel_all()
        return tasks

    tasks = asyncio.run(scenario())
    assert runs == ["start", "start", "start", "ran"]
    assert tasks.failures == {"demo": 2}
    assert "FileNotFoundError" in tasks.last_error["demo"]
    failed = [r for r in caplog.records if "background task demo failed" in r.getMessage()]
    assert len(failed) == 2 and all(r.exc_info for r in failed)


@requires_netns
def test_a_child_that_cannot_be_started_is_retried_until_it_can(tmp_path: Path) -> None:
    python = _movable_python(tmp_path)
    away = python.with_name("python-away")
    command = [str(python), "-m", "fsguard_supervisor.roles", "run"]
    with running_fsguard(tmp_path, _config(tmp_path, 18131), prefix="fsgtk",
                         command=command) as system:  # fmt: skip
        assert wait_for(lambda: _pid(system, "worker-0") is not None, 10)
        old = _pid(system, "worker-0")
        assert old is not None
        python.rename(away)  # every Popen of a child now fails with FileNotFoundError
        try:
            os.kill(old, signal.SIGKILL)
            assert wait_for(lambda: _stats(system).child_start_failures >= 2, 15)
            assert "cannot start worker-0" in system.log_path.read_text()
        finally:
            away.rename(python)
        assert wait_for(lambda: _restarted(system, "worker-0", old), 20)
        assert wait_for(lambda: _worker_answers(system, 0), 20)
        assert system.proc.poll() is None


@requires_netns
def test_emfile_in_the_supervisor_is_logged_and_every_loop_recovers(tmp_path: Path) -> None:
    with running_fsguard(tmp_path, _config(tmp_path, 18132), prefix="fsgtm") as system:
        assert wait_for(lambda: _pid(system, "worker-1") is not None, 10)
        old = _pid(system, "worker-1")
        assert old is not None
        pid = system.proc.pid  # `ip netns exec` execs: the supervisor itself
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # fds 0-2 are open, so no new descriptor can be allocated at all. Nothing may
        # connect to the supervisor's ipc sockets meanwhile: libzmq 4.3.5 aborts the
        # process when accept() fails with EMFILE (ipc_listener.cpp), which is why the
        # supervisor raises its soft limit at start.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, hard))
        try:
            os.kill(old, signal.SIGKILL)  # its restart needs fds too (Popen's pipes)
            assert wait_for(
                lambda: "background task worker-stats failed" in system.log_path.read_text(), 15
            )
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        log_text = system.log_path.read_text()
        assert "Too many open files" in log_text
        assert wait_for(lambda: _restarted(system, "worker-1", old), 20)
        assert wait_for(lambda: _worker_answers(system, 1), 20)
        stats = _stats(system)
        assert stats.tasks.failures["worker-stats"] >= 1
        assert {"reaper", "worker-stats", "control", "actions", "esl"} <= set(stats.tasks.running)
        assert system.proc.poll() is None
