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
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import control  # noqa: E402
from bench import firewall_run as fw_run  # noqa: E402
from bench.figures import save_results  # noqa: E402
from tests.netns_helpers import netns  # noqa: E402

SET = "fsg-bench-rec"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    if fw_run.netns_missing():
        return 0
    count = args.count
    results: dict[str, object] = {"count": count}
    with tempfile.TemporaryDirectory() as tmp, netns("fsgbrec") as ns:
        config, runtime = fw_run.write_config(
            Path(tmp), {"ipset_name": SET, "block_duration": 3600,
                        "trusted_networks": ["127.0.0.0/8"]}, workers={"count": 1})  # fmt: skip
        popen = fw_run.start(ns, config)
        fw_run.wait_ready(runtime, popen)
        ips = [str(a) for a in fw_run.addrs(count, "10.64.0.0")]
        elapsed = fw_run.push_and_ack(runtime, ips, "b", timeout=30)
        in_kernel = fw_run.ipset_entries(ns, SET)
        stats = control.firewall_stats(runtime, timeout=10)
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
        fw_run.stop(popen)

        for label, reboot in (("restart", False), ("reboot", True)):
            if reboot:
                fw_run.remove_kernel_objects("ipset", ns)
            popen, row = fw_run.start_timed(ns, config, runtime)
            in_kernel = fw_run.ipset_entries(ns, SET)
            results[label] = {**row, "in_kernel": in_kernel}
            print(f"{label}: {row['stored']} stored bans, {row['added']} re-added, reconcile "
                  f"{row['reconcile_seconds']:.2f}s, exec -> ready "
                  f"{row['start_to_ready_seconds']:.2f}s (kernel holds {in_kernel})")
            fw_run.stop(popen)
    save_results("reconcile", results, show=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
