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
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import firewall_run as fw_run  # noqa: E402
from fsguard_firewall.kernel import KernelFirewall  # noqa: E402
from fsguard_firewall.nft_backend import NftBackend  # noqa: E402
from tests.netns_helpers import netns  # noqa: E402

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


def bench_kernel(kind: str, count: int, batch: int = 1000) -> dict[str, Any]:
    with netns("bbk") as ns:
        fw = backend(kind, ns)
        fw.ensure_setup()
        elapsed = fw_run.apply_in_batches(fw, fw_run.addrs(count, "100.64.0.0"), batch)
    return {"bans": count, "batch": batch, "seconds": round(elapsed, 3),
            "bans_per_second": round(count / elapsed)}  # fmt: skip


def bench_process(kind: str, count: int, stored: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, netns("bbp") as ns:
        config, runtime = fw_run.write_config(
            Path(tmp), {"ipset_name": SET, "nftables_table": TABLE, "firewall_backend": kind,
                        "block_duration": 3600, "trusted_networks": ["127.0.0.0/8"]},
            workers={"count": 1})  # fmt: skip
        popen = fw_run.start(ns, config)
        fw_run.wait_ready(runtime, popen)
        ips = [str(a) for a in fw_run.addrs(count, "10.64.0.0")]
        elapsed = fw_run.push_and_ack(runtime, ips, "a")
        out["process"] = {"bans": count, "seconds": round(elapsed, 3),
                          "bans_per_second": round(count / elapsed),
                          "in_kernel": kernel_count(kind, ns)}  # fmt: skip
        rest = [str(a) for a in fw_run.addrs(stored - count, "10.96.0.0")]
        fw_run.push_and_ack(runtime, rest, "b")  # fill the store up to `stored` bans
        fw_run.stop(popen)
        for label, reboot in (("reboot", True), ("restart", False)):
            if reboot:
                fw_run.remove_kernel_objects(kind, ns, TABLE)
            popen, row = fw_run.start_timed(ns, config, runtime)
            out[label] = {**row, "in_kernel": kernel_count(kind, ns)}
            fw_run.stop(popen)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000, help="new bans timed")
    parser.add_argument("--reconcile", type=int, default=100_000, help="stored bans")
    parser.add_argument("--kernel-only", action="store_true")
    args = parser.parse_args()
    if fw_run.netns_missing():
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
