"""kill -9 under a stream of events, the whole `fsguard run` tree, for real.

A fake FreeSWITCH streams failed registrations from many addresses (each crosses the
threshold once); the firewall, or a worker, is killed with SIGKILL mid-stream. Counted:
no ban committed (acknowledged) before the kill is lost, and after the firewall kill
every decision a worker made is eventually committed and in the kernel (workers re-send
what was not acknowledged; the firewall dedupes on decision ids).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsguard_cli.simulator import ThreadedFakeFreeSwitch, register_failure
from shared import addresses
from shared.control import ControlError, PeerUnavailable, call
from shared.ops import firewall as fwo
from shared.ops import supervisor as sup_ops
from shared.ops import worker
from shared.ops.base import Empty
from tests.netns_helpers import requires_netns, run_in
from tests.system_helpers import fsguard_config, running_fsguard, wait_for

pytestmark = [requires_netns]

SET = "fsg-crash"
WORKERS = 2
ATTACKERS = [f"203.0.{113 + i // 250}.{1 + i % 250}" for i in range(400)]
UA = "Yealink SIP-T46S 66.86.0.15"


def _config(tmp: Path, esl_port: int) -> dict[str, Any]:
    return fsguard_config(tmp, str(esl_port), set_name=SET, api_port="18091", workers=WORKERS,
                          security={"trusted_networks": ["127.0.0.0/8"]})


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with running_fsguard(tmp_path, lambda port: _config(tmp_path, port), prefix="fsgcrash") as s:
        yield {"ns": s.ns, "fake": s.fake, "proc": s.proc, "rd": s.runtime_dir}


def _banned(rd: str) -> set[str] | None:
    try:
        bans = call(addresses.firewall_control(rd), fwo.BLACKLIST, Empty(), timeout=1.0)
    except (PeerUnavailable, ControlError):
        return None
    return set(bans)


def _kernel(ns: str) -> set[str]:
    out = run_in(ns, ["ipset", "save", SET], check=True).stdout
    return {line.split()[2] for line in out.splitlines() if line.startswith("add ")}


def _child_pid(rd: str, name: str) -> int:
    children = call(addresses.supervisor_control(rd), sup_ops.PROCESSES, Empty())
    pid = next(c.pid for c in children if c.name == name)
    assert pid is not None
    return pid


def _stream(fake: ThreadedFakeFreeSwitch, ips: list[str], chunk: int = 20) -> None:
    """6 failures per address (threshold 5), interleaved, in chunks."""
    for i in range(0, len(ips), chunk):
        part = ips[i : i + chunk]
        fake.send_events([register_failure(ip, user="1000", user_agent=UA)
                          for _ in range(6) for ip in part])  # fmt: skip
        time.sleep(0.01)


def _wait(predicate: Callable[[], object], timeout: float) -> bool:
    return wait_for(predicate, timeout, interval=0.1)


def _worker_totals(rd: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for i in range(WORKERS):
        try:
            stats = call(addresses.worker_control(rd, i), worker.STATS, Empty(), timeout=1.0)
        except (PeerUnavailable, ControlError):
            continue
        for key in ("decisions_sent", "decisions_acked", "decisions_unacked", "decisions_resent"):
            totals[key] = totals.get(key, 0) + int(getattr(stats, key))
    return totals


def test_kill_firewall_under_stream_loses_no_ban(tree: dict[str, Any]) -> None:
    ns, fake, rd = tree["ns"], tree["fake"], tree["rd"]
    first, rest = ATTACKERS[:150], ATTACKERS[150:]
    _stream(fake, first)
    fw_pid = _child_pid(rd, "firewall")
    _stream(fake, rest[:50])  # decisions in flight ...
    committed = _banned(rd)  # ... acknowledged up to here
    assert committed is not None
    os.kill(fw_pid, signal.SIGKILL)
    _stream(fake, rest[50:])  # the stream goes on while the firewall is down/restarting

    assert _wait(lambda: (_banned(rd) or set()) >= set(ATTACKERS), 30), (
        f"missing {len(set(ATTACKERS) - (_banned(rd) or set()))} bans"
    )
    assert _child_pid(rd, "firewall") != fw_pid
    banned = _banned(rd) or set()
    assert committed <= banned, "a ban acknowledged before the kill was lost"
    assert _wait(lambda: _kernel(ns) >= set(ATTACKERS), 5)
    assert _wait(lambda: _worker_totals(rd)["decisions_unacked"] == 0, 10)
    totals = _worker_totals(rd)
    print(f"\nfirewall kill -9: {len(committed)} committed before the kill, "
          f"{len(banned)}/{len(ATTACKERS)} banned after; workers: {totals}")
    assert totals["decisions_sent"] >= len(ATTACKERS)


def test_kill_worker_under_stream_loses_no_ban(tree: dict[str, Any]) -> None:
    ns, fake, rd = tree["ns"], tree["fake"], tree["rd"]
    _stream(fake, ATTACKERS[:200])
    assert _wait(lambda: len(_banned(rd) or ()) >= 150, 10)
    victim = _child_pid(rd, "worker-0")
    committed = _banned(rd) or set()
    os.kill(victim, signal.SIGKILL)
    _stream(fake, ATTACKERS[200:])

    def worker_back() -> bool:
        try:
            if _child_pid(rd, "worker-0") in (victim, None):
                return False
            call(addresses.worker_control(rd, 0), worker.PING, Empty(), timeout=1.0)
            return True
        except (StopIteration, AssertionError, TypeError, PeerUnavailable, ControlError):
            return False

    assert _wait(worker_back, 10), "worker-0 not restarted"
    banned = _banned(rd) or set()
    assert committed <= banned and committed <= _kernel(ns), "a committed ban was lost"
    # The killed shard lost its counters only: the other shard's addresses are all banned
    # and a fresh attack on the restarted shard is banned again.
    late = [f"198.18.0.{n}" for n in range(1, 60)]
    _stream(fake, late)
    assert _wait(lambda: set(late) <= (_banned(rd) or set()), 10)
    print(f"\nworker kill -9: {len(committed)} committed before the kill, all kept; "
          f"{len(_banned(rd) or ())} banned at the end")
