"""End to end, for real: fake FreeSWITCH over TCP -> `fsguard run` (every process)
-> ipset in a fresh network namespace -> packets from a second namespace dropped.

The fake ESL server's listening socket is created inside the namespace, so the
fsguard tree (started with `ip netns exec`) reaches it on that namespace's
loopback; the ZeroMQ ipc sockets are files, so this test talks to the control
sockets from outside the namespace.
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
from shared.iputil import shard_of
from tests.netns_helpers import netns, requires_netns, run_in, socket_in, udp_reaches, veth_pair

pytestmark = [requires_netns]

SET_NAME = "fsg-e2e"
BANNED = "203.0.113.7"
BELOW_THRESHOLD = "203.0.113.8"
CLEAN = "203.0.113.9"
TRUSTED = "198.51.100.5"
WORKERS = 2


def _write_config(tmp: Path, esl_port: int) -> Path:
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": "18088"},
        "security": {
            "esl_host": "127.0.0.1",
            "esl_port": str(esl_port),
            "esl_password": "ClueCon",
            "max_failed_attempts": 5,
            "failed_attempts_window": "10m",
            "trusted_networks": ["127.0.0.0/8", "198.51.100.0/24"],
            "ipset_name": SET_NAME,
            "reconnect_backoff": "100ms",
            "auto_whitelist_on_success": False,
        },
        "paths": {"runtime_dir": str(tmp / "run"), "state_dir": str(tmp / "state")},
        "workers": {"count": WORKERS},
        "logging": {"format": "human", "level": "info"},
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _in_set(ns: str, ip: str) -> bool:
    return run_in(ns, ["ipset", "test", SET_NAME, ip], check=False).returncode == 0


def _wait(predicate: Any, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


PHONE_UA = "Yealink SIP-T46S 66.86.0.15"


def _failures(ip: str, count: int) -> list[Any]:
    """Failed registrations for one account from an ordinary phone's User-Agent."""
    return [register_failure(ip, user="1000", user_agent=PHONE_UA) for _ in range(count)]


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with netns("fsge2e") as ns1, netns("fsge2c") as ns2:
        veth_pair(ns1, "203.0.113.1/24", ns2, [f"{BANNED}/24", f"{CLEAN}/24"])
        listener = socket_in(ns1, socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        esl_port = listener.getsockname()[1]
        fake = ThreadedFakeFreeSwitch(sock=listener)
        fake.start()
        cfg = _write_config(tmp_path, esl_port)
        fsguard = Path(sys.executable).parent / "fsguard"
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns1, str(fsguard), "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "fsguard.log", "wb"),  # noqa: SIM115
        )
        try:
            assert fake.wait_for_subscription(20), "fsguard never subscribed to events"
            yield {"ns1": ns1, "ns2": ns2, "fake": fake, "proc": proc, "tmp": tmp_path,
                   "runtime_dir": str(tmp_path / "run")}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            fake.stop()
            sys.stderr.write((tmp_path / "fsguard.log").read_text()[-4000:])


def _children(runtime_dir: str) -> list[dict[str, Any]]:
    reply = request(addresses.supervisor_control(runtime_dir), "processes", timeout=2)
    assert reply.ok
    return list(reply.data)


def test_threshold_ban_reaches_kernel_and_drops_packets(system: dict[str, Any]) -> None:
    ns1, ns2, fake = system["ns1"], system["ns2"], system["fake"]
    assert udp_reaches(ns2, BANNED, ns1, "203.0.113.1", 5060), "path broken before any ban"

    fake.send_events(_failures(TRUSTED, 8) + _failures(BELOW_THRESHOLD, 4))
    sent = time.monotonic()
    fake.send_events(_failures(BANNED, 6))
    assert _wait(lambda: _in_set(ns1, BANNED), timeout=1.0), "banned address not in set in 1 s"
    elapsed = time.monotonic() - sent
    assert elapsed < 1.0
    # Everything sent before the ban was processed before it: the others had their chance.
    assert not _in_set(ns1, BELOW_THRESHOLD)
    assert not _in_set(ns1, TRUSTED)

    assert not udp_reaches(ns2, BANNED, ns1, "203.0.113.1", 5060), "banned source got through"
    assert udp_reaches(ns2, CLEAN, ns1, "203.0.113.1", 5060), "clean source was dropped"


def test_killed_worker_restarts_and_sigterm_stops_everything(system: dict[str, Any]) -> None:
    ns1, fake, proc, rd = system["ns1"], system["fake"], system["proc"], system["runtime_dir"]
    workers = [c for c in _children(rd) if c["role"] == "worker"]
    assert len(workers) == WORKERS
    victim = workers[0]
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted() -> bool:
        try:
            current = {c["name"]: c for c in _children(rd)}
        except (PeerUnavailable, AssertionError):
            return False
        entry = current[victim["name"]]
        return entry["pid"] not in (None, victim["pid"]) and entry["restarts"] >= 1

    assert _wait(restarted, timeout=10, interval=0.1), "killed worker was not restarted"
    index = int(victim["name"].split("-")[1])
    # An address owned by the restarted worker's shard.
    target = next(f"203.0.113.{n}" for n in range(20, 250)
                  if shard_of(f"203.0.113.{n}", WORKERS) == index)

    def worker_ready() -> bool:
        try:
            return request(addresses.worker_control(rd, index), "ping", timeout=0.5).ok
        except PeerUnavailable:
            return False

    assert _wait(worker_ready, timeout=10, interval=0.1)
    fake.send_events(_failures(target, 6))
    assert _wait(lambda: _in_set(ns1, target), timeout=5), "events stopped flowing after restart"

    pids = [c["pid"] for c in _children(rd) if c["pid"]]
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
