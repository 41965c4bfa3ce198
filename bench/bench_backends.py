"""Firewall backends side by side: ipset + iptables vs nftables, for real.

    sudo .venv/bin/python bench/bench_backends.py [--count 20000] [--reconcile 100000]

Each figure is measured for both backends (`security.firewall_backend`), each in its own
throwaway network namespace:

1. kernel apply: the backend's `apply` in batches of 1000 new bans (one `ipset restore`
   or one `nft -f -` transaction per batch) -> bans/s; both backends alternately, three
   rounds, the median (the machine's load moves single runs a lot).
2. process: the real firewall process; `count` BanDecisions pushed over ZeroMQ as
   worker 0, the clock stops at the last ok DecisionAck (committed to SQLite and in the
   kernel) -> new bans/s.
3. reconcile: the firewall stopped with `reconcile` stored bans, the backend's kernel
   objects removed (a reboot), the firewall started again: the start-up reconcile's own
   duration (all bans re-added with their remaining timeout) and exec -> ready. Then a
   plain restart (kernel already in sync).

Writes bench/firewall_backends.json (committed: the figures docs/nftables.md quotes).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import zmq  # noqa: E402

from bench.bench_reconcile import start, stop, wait_ready  # noqa: E402
from fsguard_firewall.kernel import KernelFirewall  # noqa: E402
from fsguard_firewall.nft_backend import NftBackend  # noqa: E402
from shared import addresses  # noqa: E402
from shared.control import request  # noqa: E402
from shared.messages import BanDecision, DecisionAck, decode, encode  # noqa: E402
from tests.netns_helpers import netns, netns_unavailable_reason, run_in  # noqa: E402

SET = "fsg-bench"
TABLE = "fsgbench"
BACKENDS = ("ipset", "nftables")
OUT = REPO / "bench" / "firewall_backends.json"


def backend(kind: str, ns: str) -> KernelFirewall | NftBackend:
    prefix = ["ip", "netns", "exec", ns]
    if kind == "ipset":
        return KernelFirewall(SET, "INPUT", default_timeout=3600, command_prefix=prefix)
    return NftBackend(TABLE, SET, default_timeout=3600, command_prefix=prefix)


def kernel_count(kind: str, ns: str) -> int:
    return len(backend(kind, ns).list_members())


def remove_kernel_objects(kind: str, ns: str) -> None:
    """What a reboot leaves: none of the backend's sets or rules."""
    if kind == "ipset":
        for binary in ("iptables", "ip6tables"):
            run_in(ns, [binary, "-F"], check=True)
        run_in(ns, ["ipset", "destroy"], check=True)
    else:
        run_in(ns, ["nft", "delete", "table", "inet", TABLE], check=True)


def addrs(count: int, base: str) -> list[ipaddress.IPv4Address]:
    first = int(ipaddress.IPv4Address(base))
    return [ipaddress.IPv4Address(first + i) for i in range(count)]


def bench_kernel(kind: str, count: int, batch: int = 1000) -> dict[str, Any]:
    with netns("bbk") as ns:
        fw = backend(kind, ns)
        fw.ensure_setup()
        targets = addrs(count, "100.64.0.0")
        t0 = time.perf_counter()
        for i in range(0, count, batch):
            fw.apply([(a, 3600) for a in targets[i : i + batch]])
        elapsed = time.perf_counter() - t0
        held = len(fw.list_members())
    assert held == count, (kind, held)
    return {"bans": count, "batch": batch, "seconds": round(elapsed, 3),
            "bans_per_second": round(count / elapsed)}  # fmt: skip


def _config(kind: str, tmp: str) -> Path:
    config = Path(tmp) / "config.json"
    config.write_text(json.dumps({
        "security": {"ipset_name": SET, "nftables_table": TABLE, "firewall_backend": kind,
                     "block_duration": 3600, "trusted_networks": ["127.0.0.0/8"]},
        "paths": {"runtime_dir": os.path.join(tmp, "run"),
                  "state_dir": os.path.join(tmp, "state")},
        "workers": {"count": 1},
        "logging": {"level": "warning", "format": "human"},
    }))  # fmt: skip
    return config


def push_and_ack(runtime: str, ips: list[str], tag: str) -> float:
    """Push one decision per address as worker 0; seconds until every ok ack arrived."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    acks = ctx.socket(zmq.PULL)
    acks.setsockopt(zmq.RCVHWM, 0)
    acks.bind(addresses.worker_acks(runtime, 0))
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.connect(addresses.firewall_decisions(runtime))
    msgs = [
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
        if not acks.poll(60_000):
            raise SystemExit(f"only {acked} of {len(ips)} acks")
        msg = decode(acks.recv())
        if isinstance(msg, DecisionAck) and msg.id and msg.ok:
            acked += 1
    elapsed = time.perf_counter() - t0
    push.close(0)
    acks.close(0)
    ctx.term()
    return elapsed


def bench_process(kind: str, count: int, stored: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, netns("bbp") as ns:
        config = _config(kind, tmp)
        runtime = os.path.join(tmp, "run")
        popen = start(ns, config)
        wait_ready(runtime, popen)
        ips = [str(a) for a in addrs(count, "10.64.0.0")]
        elapsed = push_and_ack(runtime, ips, "a")
        out["process"] = {"bans": count, "seconds": round(elapsed, 3),
                          "bans_per_second": round(count / elapsed),
                          "in_kernel": kernel_count(kind, ns)}  # fmt: skip
        rest = [str(a) for a in addrs(stored - count, "10.96.0.0")]
        push_and_ack(runtime, rest, "b")  # fill the store up to `stored` bans
        stop(popen)
        for label, reboot in (("reboot", True), ("restart", False)):
            if reboot:
                remove_kernel_objects(kind, ns)
            t0 = time.perf_counter()
            popen = start(ns, config)
            wait_ready(runtime, popen)
            ready = time.perf_counter() - t0
            rec = request(addresses.firewall_control(runtime), "stats", timeout=10).data
            rec = rec["last_reconcile"]
            out[label] = {
                "stored": rec["stored"], "added": rec["added"],
                "reconcile_seconds": round(rec["seconds"], 3),
                "start_to_ready_seconds": round(ready, 3), "in_kernel": kernel_count(kind, ns),
            }  # fmt: skip
            stop(popen)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000, help="new bans timed")
    parser.add_argument("--reconcile", type=int, default=100_000, help="stored bans")
    parser.add_argument("--kernel-only", action="store_true")
    args = parser.parse_args()
    reason = netns_unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    results: dict[str, Any] = {"count": args.count, "stored": args.reconcile,
                               "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "kernel": os.uname().release,
                               "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}  # fmt: skip
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in BACKENDS}
    for _ in range(3):
        for kind in BACKENDS:
            rounds[kind].append(bench_kernel(kind, args.count))
    for kind in BACKENDS:
        runs = sorted(rounds[kind], key=lambda r: float(r["bans_per_second"]))
        row: dict[str, Any] = {"kernel_apply": {**runs[1], "rounds": [
            r["bans_per_second"] for r in rounds[kind]]}}  # fmt: skip
        if not args.kernel_only:
            row.update(bench_process(kind, args.count, args.reconcile))
        results[kind] = row
    print(f"{'':34}{'ipset':>14}{'nftables':>14}")

    def line(label: str, *path: str, fmt: str = "{:,.0f}") -> None:
        cells = []
        for kind in BACKENDS:
            value: Any = results[kind]
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            cells.append(fmt.format(value) if value is not None else "-")
        print(f"{label:34}{cells[0]:>14}{cells[1]:>14}")

    line("kernel apply, bans/s (batch 1000)", "kernel_apply", "bans_per_second")
    print(f"{'  (rounds)':34}" + "".join(
        f"{'/'.join(str(round(r / 1000)) + 'k' for r in results[k]['kernel_apply']['rounds']):>14}"
        for k in BACKENDS))  # fmt: skip
    line("firewall process, new bans/s", "process", "bans_per_second")
    line(f"reconcile {args.reconcile:,} after reboot, s", "reboot", "reconcile_seconds",
         fmt="{:.2f}")  # fmt: skip
    line("  exec -> ready, s", "reboot", "start_to_ready_seconds", fmt="{:.2f}")
    line(f"reconcile {args.reconcile:,} in sync, s", "restart", "reconcile_seconds",
         fmt="{:.2f}")  # fmt: skip
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
