"""State on disk (issue 11 §4), through the real firewall process in a network namespace
and, for full and read-only disks, a mount namespace of its own (`unshare -m`): the
state directory on a 1 MB tmpfs, or bind-mounted read-only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

from shared import addresses
from shared.messages import encode
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from shared.ops.firewall_bans import BanRequest
from tests.firewall_helpers import SET, Proc, decision, launch, stop, wait_for, write_config
from tests.netns_helpers import requires_netns, run_in

pytestmark = requires_netns

FSGUARD = str(Path(sys.executable).with_name("fsguard"))


def output_of(proc: Proc) -> str:
    stop(proc.popen)
    return proc.popen.stdout.read().decode() if proc.popen.stdout else ""


def in_mounts(proc: Proc, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the firewall's mount namespace."""
    return subprocess.run(["nsenter", "-t", str(proc.popen.pid), "-m", "--", *argv],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def fill_kernel(ns: str, count: int) -> None:
    run_in(ns, ["ipset", "create", SET, "hash:ip", "timeout", "3600"], check=True)
    lines = "".join(f"add {SET} 198.18.{i // 250}.{i % 250 + 1} timeout 3000\n"
                    for i in range(count))  # fmt: skip
    subprocess.run(["ip", "netns", "exec", ns, "ipset", "restore"], input=lines, text=True,
                   check=True)  # fmt: skip


def test_empty_database_adopts_the_kernel_entries(ns: str, tmp_path: Path) -> None:
    config, runtime = write_config(tmp_path)
    fill_kernel(ns, 300)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "fsguard.db").write_bytes(b"")  # a 0-byte database
    proc = launch(ns, config, runtime)
    try:
        assert len(proc.members()) == 300  # nothing wiped
        assert len(proc.call(fwo.BLACKLIST, Empty()).keys()) == 300  # adopted: recorded, listed
        assert proc.last_reconcile().adopted == 300
    finally:
        out = output_of(proc)
    assert "STATE STORE IS EMPTY" in out and "--from-empty" in out
    # Missing on purpose: the operator says so, and only then the kernel follows the store.
    for name in os.listdir(tmp_path / "state"):
        os.unlink(tmp_path / "state" / name)
    done = run_in(ns, [FSGUARD, "reconcile", "--config", str(config), "--from-empty",
                       "--json"], timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert run_in(ns, ["ipset", "list", "-t", SET], check=True).stdout.count(
        "Number of entries: 0"
    ) == 1


def test_full_disk_keeps_enforcing_and_writes_the_backlog_later(
    ns: str, tmp_path: Path
) -> None:
    config, runtime = write_config(tmp_path, drift_check_interval=1)
    state = tmp_path / "state"
    state.mkdir()
    proc = launch(ns, config, runtime, mount=f"mount -t tmpfs -o size=1m tmpfs {state}")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(addresses.firewall_decisions(runtime))
    count = 3000
    try:
        in_mounts(proc, "dd", "if=/dev/zero", f"of={state}/filler", "bs=4k")  # ENOSPC
        for i in range(count):
            push.send(encode(decision(f"f{i}", f"198.19.{i // 250}.{i % 250 + 1}")))
        wait_for(lambda: len(proc.members()) == count, timeout=60)  # the kernel has them all
        stats = proc.call(fwo.STATS, Empty())
        assert stats.store_errors >= 1 and stats.store_backlog > 0
        # the ledger's view agrees with the kernel
        assert len(proc.call(fwo.BLACKLIST, Empty())) == count
        time.sleep(1.5)  # a drift check runs: it must not remove the backlog's bans
        assert len(proc.members()) == count and proc.popen.poll() is None
        in_mounts(proc, "rm", "-f", f"{state}/filler")  # space returns
        wait_for(lambda: proc.call(fwo.STATS, Empty()).store_backlog == 0, timeout=30)
        exported = proc.call(fwo.BANS_EXPORT, Empty())["blacklist"]
        assert len(exported) == count  # written to the store
    finally:
        push.close(0)
        out = output_of(proc)
    assert "state store cannot write" in out and "writable again" in out


def test_read_only_state_directory_runs_degraded(ns: str, tmp_path: Path) -> None:
    config, runtime = write_config(tmp_path)
    state = tmp_path / "state"
    proc = launch(ns, config, runtime)  # a first, normal run leaves a ban behind
    proc.call(fwo.BAN, BanRequest(ip="203.0.113.80", duration=3000))
    output_of(proc)
    ro = f"mount --bind {state} {state} && mount -o remount,bind,ro {state}"
    proc = launch(ns, config, runtime, mount=ro)  # not exit 78: detection goes on
    try:
        stats = proc.call(fwo.STATS, Empty())
        assert stats.store_degraded == 1
        assert "203.0.113.80" in proc.call(fwo.BLACKLIST, Empty())  # the kernel's entry, adopted
        proc.call(fwo.BAN, BanRequest(ip="203.0.113.81", duration=3000))
        assert {"203.0.113.80", "203.0.113.81"} <= set(proc.members())
        in_mounts(proc, "mount", "-o", "remount,bind,rw", str(state))
        wait_for(lambda: proc.call(fwo.STATS, Empty()).store_degraded == 0, timeout=30)
    finally:
        out = output_of(proc)
    assert "UNUSABLE" in out and "DEGRADED" in out and "writable again" in out
    proc = launch(ns, config, runtime)  # the ban made while degraded is durable now
    try:
        assert {"203.0.113.80", "203.0.113.81"} <= set(proc.call(fwo.BLACKLIST, Empty()).keys())
    finally:
        stop(proc.popen)
