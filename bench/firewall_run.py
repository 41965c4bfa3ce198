"""The firewall for the benchmarks: its kernel backend on its own, or the real firewall
process in a throwaway network namespace, fed BanDecisions over ZeroMQ as worker 0.

Shared by bench_firewall, bench_reconcile, bench_backends and bench_fleet.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import zmq

from bench import control
from fsguard_firewall.kernel import KernelFirewall
from fsguard_firewall.nft_backend import NftBackend
from shared import addresses
from shared.messages import BanDecision, DecisionAck, decode, encode
from tests.netns_helpers import netns_unavailable_reason, run_in

REPO = Path(__file__).resolve().parents[1]


def netns_missing() -> bool:
    """True (and says why) when network namespaces cannot be used here."""
    reason = netns_unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
    return reason is not None


def addrs(count: int, base: str) -> list[ipaddress.IPv4Address]:
    """`count` consecutive IPv4 addresses from `base`."""
    first = int(ipaddress.IPv4Address(base))
    return [ipaddress.IPv4Address(first + i) for i in range(count)]


def apply_in_batches(
    fw: KernelFirewall | NftBackend, targets: list[ipaddress.IPv4Address], batch: int
) -> float:
    """Ban every target (3600 s) with one `apply` per `batch`; seconds taken. Checks
    afterwards that the kernel holds them all (outside the timed part)."""
    t0 = time.perf_counter()
    for i in range(0, len(targets), batch):
        fw.apply([(a, 3600) for a in targets[i : i + batch]])
    elapsed = time.perf_counter() - t0
    held = len(fw.list_members())
    assert held == len(targets), (type(fw).__name__, held, len(targets))
    return elapsed


def ipset_entries(ns: str, set_name: str) -> int:
    """How many entries the kernel's ipset `set_name` in `ns` holds."""
    out = run_in(ns, ["ipset", "list", "-t", set_name], check=True).stdout
    return int(out.split("Number of entries:")[1].split()[0])


def write_config(tmp: Path, security: dict[str, Any], **sections: Any) -> tuple[Path, str]:
    """tmp/config.json for the firewall (runtime and state dirs in `tmp`, warnings only):
    returns (config path, runtime dir)."""
    runtime = str(tmp / "run")
    config = tmp / "config.json"
    config.write_text(json.dumps({
        "security": security,
        "paths": {"runtime_dir": runtime, "state_dir": str(tmp / "state")},
        "logging": {"level": "warning", "format": "human"},
        **sections,
    }))  # fmt: skip
    return config, runtime


def start(
    ns: str, config: Path, output: IO[bytes] | int | None = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """The firewall process inside `ns`; its output to `output` (None: this terminal)."""
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "fsguard_firewall",
         "--config", str(config)],
        cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_ready(runtime: str, popen: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the firewall answers its control socket (its start-up reconcile is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"firewall exited with {popen.returncode}")
        if control.firewall_listening(runtime):
            try:
                control.firewall_ping(runtime, timeout=timeout)
                return
            except (control.PeerUnavailable, control.ControlRefused):
                pass
        time.sleep(0.005)
    raise SystemExit("firewall not ready")


def start_timed(
    ns: str, config: Path, runtime: str
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start the firewall and wait until it answers: the process and the figures of its
    start-up reconcile (stored bans, re-added, seconds) and of exec -> ready."""
    t0 = time.perf_counter()
    popen = start(ns, config)
    wait_ready(runtime, popen)
    ready = time.perf_counter() - t0
    rec = control.firewall_stats(runtime, timeout=10)["last_reconcile"]
    return popen, {"stored": rec["stored"], "added": rec["added"],
                   "reconcile_seconds": round(rec["seconds"], 3),
                   "start_to_ready_seconds": round(ready, 3)}  # fmt: skip


def stop(popen: subprocess.Popen[bytes]) -> None:
    popen.send_signal(signal.SIGTERM)
    popen.wait(30)


def push_and_ack(runtime: str, ips: list[str], tag: str, timeout: float = 60.0) -> float:
    """Push one decision per address as worker 0; seconds until every ok ack arrived
    (an ack is sent once the decision is committed to SQLite and in the kernel)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    acks = ctx.socket(zmq.PULL)
    acks.setsockopt(zmq.RCVHWM, 0)
    acks.bind(addresses.worker_acks(runtime, 0))
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(addresses.firewall_decisions(runtime))
    msgs = [
        # as a worker sends them: the firewall checks its recidive history for each
        encode(BanDecision(id=f"w0-{tag}-{i}", ip=ip, rule="failed_auth", reason="bench",
                           duration=3600, evidence_count=5, worker=0,
                           evidence={"base_duration": 3600.0, "recidive_prior": 0}))
        for i, ip in enumerate(ips)
    ]  # fmt: skip
    time.sleep(0.3)  # the firewall's ack PUSH connects to us
    t0 = time.perf_counter()
    for m in msgs:
        push.send(m)
    acked = 0
    while acked < len(ips):
        if not acks.poll(int(timeout * 1000)):
            raise SystemExit(f"only {acked} of {len(ips)} acks")
        msg = decode(acks.recv())
        if isinstance(msg, DecisionAck) and msg.id and msg.ok:
            acked += 1
    elapsed = time.perf_counter() - t0
    push.close(0)
    acks.close(0)
    ctx.term()
    return elapsed


def remove_kernel_objects(kind: str, ns: str, table: str = "") -> None:
    """What a reboot leaves: none of the backend's sets or rules (`table`: nftables')."""
    if kind == "ipset":
        for binary in ("iptables", "ip6tables"):
            run_in(ns, [binary, "-F"], check=True)
        run_in(ns, ["ipset", "destroy"], check=True)
    else:
        run_in(ns, ["nft", "delete", "table", "inet", table], check=True)
