"""The firewall process for real: `ip netns exec <ns> python -m fsguard_firewall`.

Its ipc sockets are files in a tmp runtime dir, so a test process (outside the namespace)
talks to it over real ZeroMQ sockets; the kernel side is read with ipset inside the
namespace. Shared by every test that runs the firewall process on its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import addresses
from shared.control import ControlError, call
from shared.messages import BanDecision, ControlReply
from shared.ops import firewall as fwo
from shared.ops.base import Empty, Op, RepT, ReqT
from shared.ops.firewall_state import ReconcileResult
from tests import system_helpers
from tests.control_helpers import raw_request
from tests.netns_helpers import run_in

REPO = Path(__file__).resolve().parents[1]
SET = "fsg-proc"


@dataclass
class Proc:
    ns: str
    runtime: str
    popen: subprocess.Popen[bytes]

    def call(self, op: Op[ReqT, RepT], req: ReqT) -> RepT:
        """One typed op on this firewall's control socket (raises ControlError if refused)."""
        return call(addresses.firewall_control(self.runtime), op, req, timeout=5)

    def refusal(self, op: Op[ReqT, RepT], req: ReqT) -> ControlError:
        """The firewall's refusal of op (a test failure if it answers)."""
        try:
            self.call(op, req)
        except ControlError as exc:
            return exc
        raise AssertionError(f"the firewall did not refuse {op.name}")

    def raw(self, op: str, args: dict[str, Any]) -> ControlReply:
        """One request as any client puts it on the wire (to send what no typed client
        can: a missing or wrongly typed field)."""
        return raw_request(addresses.firewall_control(self.runtime), op, args)

    def last_reconcile(self) -> ReconcileResult:
        rec = self.call(fwo.STATS, Empty()).last_reconcile
        assert rec is not None, "no reconcile ran"
        return rec

    def members(self) -> dict[str, str]:
        out = run_in(self.ns, ["ipset", "save"], check=True).stdout
        parts = [line.split() for line in out.splitlines() if line.startswith("add ")]
        return {p[2]: p[1] for p in parts}


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until cond() (a bounded wait); a test failure if it never holds."""
    if not system_helpers.wait_for(cond, timeout, interval=0.02):
        raise AssertionError("condition not met in time")


def write_config(tmp: Path, **security: Any) -> tuple[Path, str]:
    runtime = str(tmp / "run")
    cfg = {
        "security": {
            "ipset_name": SET,
            "iptables_chain": "INPUT",
            "block_duration": 3600,
            "trusted_networks": ["127.0.0.0/8", "10.0.0.0/8", "2001:db8:ffff::/48"],
            **security,
        },
        "paths": {"runtime_dir": runtime, "state_dir": str(tmp / "state")},
        "logging": {"level": "info", "format": "human"},
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path, runtime


def start(ns: str, config: Path, mount: str = "") -> subprocess.Popen[bytes]:
    """The firewall in `ns`; `mount`: shell commands run first in a new mount namespace."""
    inner = [sys.executable, "-m", "fsguard_firewall", "--config", str(config)]
    if mount:
        argv = ["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
                "sh", "-c", f'{mount} && exec "$@"', "sh", *inner]  # fmt: skip
    else:
        argv = ["ip", "netns", "exec", ns, *inner]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.kill()
        popen.wait(5)


def exit_and_output(popen: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    """The process's exit code (waiting up to `timeout`) and all it wrote."""
    code = popen.wait(timeout)
    return code, popen.stdout.read().decode() if popen.stdout else ""


def run_to_exit(ns: str, config: Path, timeout: float, mount: str = "") -> tuple[int, str]:
    """`start` a firewall expected to exit by itself: its exit code (a test failure if it
    still runs after `timeout`) and all it wrote."""
    popen = start(ns, config, mount)
    try:
        return exit_and_output(popen, timeout)
    finally:
        stop(popen)


def launch(ns: str, config: Path, runtime: str, mount: str = "") -> Proc:
    """A started firewall (see `start`) that answers `ping` (after its start-up
    reconcile); a test failure with its output if it exits first."""
    popen = start(ns, config, mount)
    try:
        proc = Proc(ns, runtime, popen)
        endpoint = addresses.ipc_path(addresses.firewall_control(runtime))
        wait_for(lambda: os.path.exists(endpoint) or popen.poll() is not None)
        assert popen.poll() is None, popen.stdout.read().decode() if popen.stdout else ""
        assert proc.call(fwo.PING, Empty()).role == "firewall"
    except BaseException:
        stop(popen)
        raise
    return proc


def terminate(proc: Proc) -> str:
    """SIGTERM; a test failure unless it exits 0 within 5 s; all it wrote."""
    proc.popen.send_signal(signal.SIGTERM)
    code, output = exit_and_output(proc.popen, 5)
    assert code == 0
    return output


def timeouts(ns: str) -> dict[str, int]:
    """Every set member's remaining timeout in seconds (-1: a set without timeouts)."""
    out = run_in(ns, ["ipset", "save"], check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("add ")]
    return {r[2]: int(r[4]) if len(r) > 4 else -1 for r in rows}


@contextmanager
def running_firewall(ns: str, config: Path, runtime: str) -> Iterator[Proc]:
    """`launch`, killed on exit."""
    proc = launch(ns, config, runtime)
    try:
        yield proc
    finally:
        stop(proc.popen)


def decision(id: str, ip: str, duration: float = 600, **kw: Any) -> BanDecision:
    kw.setdefault("reason", "Exceeded max failed registrations (5)")
    return BanDecision(id=id, ip=ip, rule="failed_auth", duration=duration, evidence_count=5, **kw)
