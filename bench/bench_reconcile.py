"""Durable firewall: commit throughput and start-up reconcile time, for real.

    sudo .venv/bin/python bench/bench_reconcile.py [--count 100000]

1. throughput: the real firewall process in a network namespace with its SQLite store
   (WAL, synchronous=FULL); BanDecisions pushed over ZeroMQ as worker 0; the clock stops
   when the last DecisionAck arrives (an ack is sent only after the batch is committed to
   SQLite and applied to the kernel). Reports new bans/s.
2. reconcile: the firewall stopped, the sets destroyed (a reboot), the firewall started
   again with `count` stored bans: time from exec to the first control answer (after the
   start-up reconcile re-added every ban with its remaining timeout), and the reconcile's
   own duration. Also a plain restart (kernel already in sync).
Writes bench/results/reconcile.json.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import zmq  # noqa: E402

from shared import addresses  # noqa: E402
from shared.control import PeerUnavailable, request  # noqa: E402
from shared.messages import BanDecision, DecisionAck, decode, encode  # noqa: E402
from tests.netns_helpers import netns, netns_unavailable_reason, run_in  # noqa: E402

SET = "fsg-bench-rec"


def start(ns: str, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "fsguard_firewall",
         "--config", str(config)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_ready(runtime: str, popen: subprocess.Popen[bytes], timeout: float = 60) -> None:
    endpoint = addresses.firewall_control(runtime)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"firewall exited with {popen.returncode}")
        if os.path.exists(addresses.ipc_path(endpoint)):
            try:
                if request(endpoint, "ping", timeout=timeout).ok:
                    return
            except PeerUnavailable:
                pass
        time.sleep(0.005)
    raise SystemExit("firewall not ready")


def stop(popen: subprocess.Popen[bytes]) -> None:
    popen.send_signal(signal.SIGTERM)
    popen.wait(30)


def kernel_count(ns: str) -> int:
    out = run_in(ns, ["ipset", "list", "-t", SET], check=True).stdout
    return int(out.split("Number of entries:")[1].split()[0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    reason = netns_unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    count = args.count
    base = int(ipaddress.IPv4Address("10.64.0.0"))
    results: dict[str, object] = {"count": count}
    with tempfile.TemporaryDirectory() as tmp, netns("fsgbrec") as ns:
        runtime = os.path.join(tmp, "run")
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({
            "security": {"ipset_name": SET, "block_duration": 3600,
                         "trusted_networks": ["127.0.0.0/8"]},
            "paths": {"runtime_dir": runtime, "state_dir": os.path.join(tmp, "state")},
            "workers": {"count": 1},
            "logging": {"level": "warning", "format": "human"},
        }))  # fmt: skip
        popen = start(ns, config)
        wait_ready(runtime, popen)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        acks = ctx.socket(zmq.PULL)
        acks.setsockopt(zmq.RCVHWM, 0)
        acks.bind(addresses.worker_acks(runtime, 0))
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)
        push.connect(addresses.firewall_decisions(runtime))
        msgs = [
            encode(BanDecision(id=f"w0-b-{i}", ip=str(ipaddress.IPv4Address(base + i)),
                               rule="failed_auth", reason="bench", duration=3600,
                               evidence_count=5, worker=0,
                               # as a worker sends them: the firewall checks its
                               # recidive history for every such decision
                               evidence={"base_duration": 3600.0, "recidive_prior": 0}))
            for i in range(count)
        ]  # fmt: skip
        time.sleep(0.3)  # the firewall's ack PUSH connects to us
        t0 = time.perf_counter()
        for m in msgs:
            push.send(m)
        acked = 0
        while acked < count:
            if not acks.poll(30_000):
                raise SystemExit(f"only {acked} of {count} acks")
            msg = decode(acks.recv())
            if isinstance(msg, DecisionAck) and msg.id and msg.ok:
                acked += 1
        elapsed = time.perf_counter() - t0
        in_kernel = kernel_count(ns)
        stats = request(addresses.firewall_control(runtime), "stats", timeout=10).data
        results["throughput"] = {
            "bans": count,
            "seconds": round(elapsed, 3),
            "bans_per_second": round(count / elapsed),
            "in_kernel": in_kernel,
            "bans_applied": stats["bans_applied"],
            "batches": stats["batches"],
        }
        print(f"throughput: {count} decisions over ZeroMQ -> committed + in kernel + acked "
              f"in {elapsed:.2f}s = {count / elapsed:,.0f} bans/s (kernel holds {in_kernel})")
        push.close(0)
        acks.close(0)
        ctx.term()
        stop(popen)

        for label, reboot in (("restart", False), ("reboot", True)):
            if reboot:
                for binary in ("iptables", "ip6tables"):
                    run_in(ns, [binary, "-F"], check=True)
                run_in(ns, ["ipset", "destroy"], check=True)
            t0 = time.perf_counter()
            popen = start(ns, config)
            wait_ready(runtime, popen)
            ready = time.perf_counter() - t0
            stats = request(addresses.firewall_control(runtime), "stats", timeout=10).data
            rec = stats["last_reconcile"]
            in_kernel = kernel_count(ns)
            results[label] = {
                "stored": rec["stored"], "added": rec["added"],
                "reconcile_seconds": round(rec["seconds"], 3),
                "start_to_ready_seconds": round(ready, 3), "in_kernel": in_kernel,
            }  # fmt: skip
            print(f"{label}: {rec['stored']} stored bans, {rec['added']} re-added, reconcile "
                  f"{rec['seconds']:.2f}s, exec -> ready {ready:.2f}s (kernel holds {in_kernel})")
            stop(popen)
    out = REPO / "bench" / "results" / "reconcile.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
