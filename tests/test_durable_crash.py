"""kill -9 under a stream of events, the whole `fsguard run` tree, for real.

A fake FreeSWITCH streams failed registrations from many addresses (each crosses the
threshold once); the firewall, or a worker, is killed with SIGKILL mid-stream. Counted:
no ban committed (acknowledged) before the kill is lost, and after the firewall kill
every decision a worker made is eventually committed and in the kernel (workers re-send
what was not acknowledged; the firewall dedupes on decision ids).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import addresses
from shared.control import PeerUnavailable, request
from shared.esl_simulator import ThreadedFakeFreeSwitch, register_failure
from tests.netns_helpers import netns, requires_netns, run_in, socket_in

pytestmark = [requires_netns]

SET = "fsg-crash"
WORKERS = 2
ATTACKERS = [f"203.0.{113 + i // 250}.{1 + i % 250}" for i in range(400)]
UA = "Yealink SIP-T46S 66.86.0.15"


def _config(tmp: Path, esl_port: int) -> Path:
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": "18091"},
        "security": {
            "esl_host": "127.0.0.1", "esl_port": str(esl_port), "esl_password": "ClueCon",
            "max_failed_attempts": 5, "failed_attempts_window": "10m",
            "trusted_networks": ["127.0.0.0/8"], "ipset_name": SET,
            "reconnect_backoff": "100ms", "auto_whitelist_on_success": False,
        },
        "paths": {"runtime_dir": str(tmp / "run"), "state_dir": str(tmp / "state")},
        "workers": {"count": WORKERS},
        "logging": {"format": "human", "level": "info"},
    }  # fmt: skip
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with netns("fsgcrash") as ns:
        listener = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        fake = ThreadedFakeFreeSwitch(sock=listener)
        fake.start()
        cfg = _config(tmp_path, listener.getsockname()[1])
        fsguard = Path(sys.executable).parent / "fsguard"
        log = open(tmp_path / "fsguard.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, str(fsguard), "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            assert fake.wait_for_subscription(20), "fsguard never subscribed to events"
            yield {"ns": ns, "fake": fake, "proc": proc, "rd": str(tmp_path / "run")}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            fake.stop()
            log.close()
            sys.stderr.write((tmp_path / "fsguard.log").read_text()[-3000:])


def _ctl(endpoint: str, op: str) -> Any:
    try:
        reply = request(endpoint, op, timeout=1.0)
    except PeerUnavailable:
        return None
    return reply.data if reply.ok else None


def _banned(rd: str) -> set[str] | None:
    data = _ctl(addresses.firewall_control(rd), "blacklist")
    return None if data is None else set(data)


def _kernel(ns: str) -> set[str]:
    out = run_in(ns, ["ipset", "save", SET], check=True).stdout
    return {line.split()[2] for line in out.splitlines() if line.startswith("add ")}


def _child_pid(rd: str, name: str) -> int:
    children = _ctl(addresses.supervisor_control(rd), "processes")
    assert children is not None
    return int(next(c["pid"] for c in children if c["name"] == name))


def _stream(fake: ThreadedFakeFreeSwitch, ips: list[str], chunk: int = 20) -> None:
    """6 failures per address (threshold 5), interleaved, in chunks."""
    for i in range(0, len(ips), chunk):
        part = ips[i : i + chunk]
        fake.send_events([register_failure(ip, user="1000", user_agent=UA)
                          for _ in range(6) for ip in part])  # fmt: skip
        time.sleep(0.01)


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def _worker_totals(rd: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for i in range(WORKERS):
        stats = _ctl(addresses.worker_control(rd, i), "stats") or {}
        for key in ("decisions_sent", "decisions_acked", "decisions_unacked", "decisions_resent"):
            totals[key] = totals.get(key, 0) + int(stats.get(key, 0))
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
            return _child_pid(rd, "worker-0") not in (victim, None) and bool(
                _ctl(addresses.worker_control(rd, 0), "ping")
            )
        except (StopIteration, AssertionError, TypeError):
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
