"""A dead supervisor (issue 11 §5): after kill -9 its children die (PR_SET_PDEATHSIG), and a
new `fsguard run` that finds leftovers of a dead tree (orphaned firewall, worker and API
holding the port, stale ipc sockets) takes over cleanly. Real process trees in a namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsguard_supervisor.takeover import PIDFILE, start_time
from shared import addresses
from shared.control import PeerUnavailable
from shared.ops import firewall as fw_ops
from shared.ops import worker as worker_ops
from tests.netns_helpers import netns, requires_netns, run_in
from tests.system_helpers import answers, fsguard_config, running_fsguard_as, wait_for
from tests.test_deploy import SYSTEMD, parse_unit
from tests.test_metrics import FsguardSystem, failures

pytestmark = requires_netns
ROLES_NAMES = {"firewall", "worker-0", "worker-1", "api"}


def _config(tmp: Path, port: int) -> Callable[[int], dict[str, Any]]:
    return lambda esl_port: fsguard_config(tmp, esl_port, set_name=f"fsg-d{port}", api_port=port)


def _gone(pid: int) -> bool:
    return start_time(pid) is None  # no such process, or a zombie


def _child_pids(system: FsguardSystem) -> dict[str, int]:
    try:
        children = system.children()
    except (AssertionError, PeerUnavailable):
        return {}
    return {c.name: c.pid for c in children if c.pid is not None}


def _ready(system: FsguardSystem) -> bool:
    """Every child up, the firewall answering, the API serving the ESL state over HTTP."""
    if set(_child_pids(system)) != ROLES_NAMES:
        return False
    try:
        if not answers(addresses.firewall_control(system.runtime_dir), fw_ops.PING, 1):
            return False
        status, body = system.http("GET", "/security/esl", timeout=2)
    except (PeerUnavailable, OSError):
        return False
    return status == 200 and json.loads(body).get("connected") is True


def _assert_bans(system: FsguardSystem, ip: str) -> None:
    system.fake.send_events(failures(ip, 6))
    assert wait_for(lambda: system.in_set(ip), 15)


def test_children_die_with_a_killed_supervisor_and_a_new_tree_starts(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 18141)
    with netns("fsgdk") as ns:
        with running_fsguard_as(FsguardSystem, tmp_path, cfg, ns=ns) as system:
            assert wait_for(lambda: _ready(system), 30)
            pids = _child_pids(system)
            system.proc.send_signal(signal.SIGKILL)
            system.proc.wait(10)
            # the kernel's death signal: bounded poll, no timing assertion (issue: < 2 s)
            assert wait_for(lambda: all(_gone(p) for p in pids.values()), 10), pids
        with running_fsguard_as(FsguardSystem, tmp_path, cfg, ns=ns) as system:
            assert wait_for(lambda: _ready(system), 30)
            _assert_bans(system, "203.0.113.61")
            log = system.log_path.read_text()
            assert "another firewall answers" not in log
            assert "address already in use" not in log.lower()


def _orphan(ns: str, argv: list[str], env: dict[str, str]) -> int:
    """Start `argv` in `ns` as an orphan (its parent shell exits at once); its pid."""
    script = " ".join(f"'{a}'" for a in argv) + " >/dev/null 2>&1 & echo $!"
    out = run_in(ns, ["sh", "-c", script], env=env).stdout
    return int(out.strip())


def _start_orphans(ns: str, tmp: Path, cfg: dict[str, Any]) -> dict[str, int]:
    config_path = tmp / "orphan-config.json"
    config_path.write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k != "FSGUARD_PARENT_PID"}
    base = [sys.executable, "-m", "fsguard_supervisor.roles"]
    conf = ["--config", str(config_path)]
    runtime = str(cfg["paths"]["runtime_dir"])
    pids = {"firewall": _orphan(ns, [*base, "firewall", *conf], env)}
    assert wait_for(lambda: answers(addresses.firewall_control(runtime), fw_ops.PING), 20)
    pids["worker-0"] = _orphan(ns, [*base, "worker", *conf, "--index", "0"], env)
    pids["api"] = _orphan(ns, [*base, "api", *conf], env)
    assert wait_for(lambda: _answers(addresses.worker_control(runtime, 0)), 20)
    return pids


def _answers(endpoint: str) -> bool:
    return answers(endpoint, worker_ops.PING)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_new_tree_stops_the_leftovers_its_dead_predecessor_recorded(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 18142)
    with netns("fsgdl") as ns:
        orphans = _start_orphans(ns, tmp_path, cfg(1))
        pidfile = {"supervisor": {"pid": _dead_pid(), "start": 1},
                   "children": [{"name": n, "pid": p, "start": start_time(p)}
                                for n, p in orphans.items()]}  # fmt: skip
        (tmp_path / "run" / PIDFILE).write_text(json.dumps(pidfile))
        with running_fsguard_as(FsguardSystem, tmp_path, cfg, ns=ns) as system:
            assert wait_for(lambda: _ready(system), 30)
            assert all(_gone(p) for p in orphans.values())
            assert "left 3 children running" in system.log_path.read_text()
            _assert_bans(system, "203.0.113.62")


def test_orphans_of_a_tree_without_a_pidfile_are_taken_over(tmp_path: Path) -> None:
    """An older tree left no pidfile: the firewall and worker are found by their control
    sockets, the API by the port it holds."""
    cfg = _config(tmp_path, 18143)
    with netns("fsgdo") as ns:
        orphans = _start_orphans(ns, tmp_path, cfg(1))
        api_port = 18143
        assert wait_for(lambda: run_in(ns, ["ss", "-Hltn", f"sport = :{api_port}"]).stdout, 20)
        with running_fsguard_as(FsguardSystem, tmp_path, cfg, ns=ns) as system:
            assert wait_for(lambda: _ready(system), 30)
            assert all(_gone(p) for p in orphans.values())
            log = system.log_path.read_text()
            for name in ("firewall", "worker-0", "api"):
                assert f"stopped an orphaned {name}" in log


def test_a_live_tree_is_not_taken_over(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 18144)
    with running_fsguard_as(FsguardSystem, tmp_path, cfg, prefix="fsgdt") as system:
        assert system.ns is not None
        assert wait_for(lambda: _ready(system), 30)
        argv = ["ip", "netns", "exec", system.ns, str(Path(sys.executable).parent / "fsguard"),
                "run", "--config", str(system.config_path)]  # fmt: skip
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "another fsguard supervisor" in second.stderr
        assert _ready(system)


def test_systemd_units_kill_the_workers_of_a_dead_supervisor() -> None:
    """Under systemd the workers live in the supervisor unit's cgroup: KillMode=mixed
    (or control-group) SIGKILLs every process left in it before Restart= starts the
    unit again, whatever the death signal does."""
    unit = parse_unit(SYSTEMD / "fsguard-supervisor.service")["Service"]
    assert unit.get("KillMode", ["control-group"])[-1] in ("mixed", "control-group")
    assert unit["Restart"][-1] in ("on-failure", "always")
