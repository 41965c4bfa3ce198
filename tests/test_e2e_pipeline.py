"""End to end, for real: fake FreeSWITCH over TCP -> `fsguard run` (every process)
-> ipset in a fresh network namespace -> packets from a second namespace dropped.

The fake ESL server's listening socket is created inside the namespace, so the
fsguard tree (started with `ip netns exec`) reaches it on that namespace's
loopback; the ZeroMQ ipc sockets are files, so this test talks to the control
sockets from outside the namespace.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsguard_cli.simulator import Headers, register_failure
from shared import addresses
from shared.control import PeerUnavailable, call
from shared.iputil import shard_of
from shared.ops import supervisor as sup_ops
from shared.ops import worker
from shared.ops.base import Empty
from shared.ops.supervisor import ChildInfo
from tests.netns_helpers import netns, requires_netns, run_in, udp_reaches, veth_pair
from tests.system_helpers import answers, fsguard_config, running_fsguard, wait_for

pytestmark = [requires_netns]

SET_NAME = "fsg-e2e"
BANNED = "203.0.113.7"
BELOW_THRESHOLD = "203.0.113.8"
CLEAN = "203.0.113.9"
TRUSTED = "198.51.100.5"
WORKERS = 2


def _config(tmp: Path, esl_port: int) -> dict[str, Any]:
    return fsguard_config(tmp, str(esl_port), set_name=SET_NAME, api_port="18088",
                          workers=WORKERS)


def _in_set(ns: str, ip: str) -> bool:
    return run_in(ns, ["ipset", "test", SET_NAME, ip], check=False).returncode == 0


def _wait(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    return wait_for(predicate, timeout, interval)


PHONE_UA = "Yealink SIP-T46S 66.86.0.15"


def _failures(ip: str, count: int) -> list[Headers]:
    """Failed registrations for one account from an ordinary phone's User-Agent."""
    return [register_failure(ip, user="1000", user_agent=PHONE_UA) for _ in range(count)]


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with netns("fsge2e") as ns1, netns("fsge2c") as ns2:
        veth_pair(ns1, "203.0.113.1/24", ns2, [f"{BANNED}/24", f"{CLEAN}/24"])
        with running_fsguard(tmp_path, lambda port: _config(tmp_path, port), ns=ns1) as s:
            yield {"ns1": ns1, "ns2": ns2, "fake": s.fake, "proc": s.proc, "tmp": tmp_path,
                   "runtime_dir": s.runtime_dir}


def _children(runtime_dir: str) -> list[ChildInfo]:
    return call(addresses.supervisor_control(runtime_dir), sup_ops.PROCESSES, Empty())


def test_threshold_ban_reaches_kernel_and_drops_packets(system: dict[str, Any]) -> None:
    ns1, ns2, fake = system["ns1"], system["ns2"], system["fake"]
    assert udp_reaches(ns2, BANNED, ns1, "203.0.113.1", 5060), "path broken before any ban"

    fake.send_events(_failures(TRUSTED, 8) + _failures(BELOW_THRESHOLD, 4))
    fake.send_events(_failures(BANNED, 6))
    # Behaviour, not timing (time to ban is measured by make bench): a generous bound only
    # so that a lost ban fails instead of hanging.
    assert _wait(lambda: _in_set(ns1, BANNED), timeout=30.0), "banned address never in set"
    # Everything sent before the ban was processed before it: the others had their chance.
    assert not _in_set(ns1, BELOW_THRESHOLD)
    assert not _in_set(ns1, TRUSTED)

    assert not udp_reaches(ns2, BANNED, ns1, "203.0.113.1", 5060), "banned source got through"
    assert udp_reaches(ns2, CLEAN, ns1, "203.0.113.1", 5060), "clean source was dropped"


def test_killed_worker_restarts_and_sigterm_stops_everything(system: dict[str, Any]) -> None:
    ns1, fake, proc, rd = system["ns1"], system["fake"], system["proc"], system["runtime_dir"]
    workers = [c for c in _children(rd) if c.role == "worker"]
    assert len(workers) == WORKERS
    victim = workers[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)

    def restarted() -> bool:
        try:
            current = {c.name: c for c in _children(rd)}
        except (PeerUnavailable, AssertionError):
            return False
        entry = current[victim.name]
        return entry.pid not in (None, victim.pid) and entry.restarts >= 1

    assert _wait(restarted, timeout=10, interval=0.1), "killed worker was not restarted"
    index = int(victim.name.split("-")[1])
    # An address owned by the restarted worker's shard.
    target = next(f"203.0.113.{n}" for n in range(20, 250)
                  if shard_of(f"203.0.113.{n}", WORKERS) == index)

    def worker_ready() -> bool:
        return answers(addresses.worker_control(rd, index), worker.PING)

    assert _wait(worker_ready, timeout=10, interval=0.1)
    fake.send_events(_failures(target, 6))
    assert _wait(lambda: _in_set(ns1, target), timeout=5), "events stopped flowing after restart"

    pids = [c.pid for c in _children(rd) if c.pid]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"child {pid} survived"
    leftovers = list(Path(rd).glob("*"))
    assert leftovers == [], f"stray sockets: {leftovers}"


def _zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
