"""Memory under a spoofed-source flood: 1,000,000 distinct addresses, one
`sofia::pre_register` each (what a UDP flood with forged sources produces).

Reports the process tree's total RSS (current and peak) after the flood, the events
each worker processed, drops, and evictions. Needs root (runs in a namespace).
Usage: python bench/bench_flood.py [--addresses N]
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import control
from bench.bench_pipeline import Tree
from bench.figures import save_results
from bench.loadgen import frame, sofia_reg
from bench.procfs import status_kb
from tests.netns_helpers import netns

BASE = int(ipaddress.IPv4Address("100.64.0.0"))


def pre_register(ip: str, seq: int) -> dict[str, str]:
    return sofia_reg("pre_register", 1810, ip, "1000", seq, {
        "from-user": "1000", "from-host": "pbx.example.com",
        "contact": f'"" <sip:1000@{ip}:5060>', "call-id": f"{seq}@{ip}", "rpid": "unknown",
        "status": "Registered(UDP)", "expires": "300", "user-agent": "Z 5.5.5",
    })  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    chunk = 20_000
    with netns("fsgflood") as ns, tempfile.TemporaryDirectory(prefix="fsg-flood-") as tmp:
        tree = Tree(ns, Path(tmp), args.workers)
        try:
            time.sleep(1.0)
            named = tree.named_pids()
            idle = {n: status_kb(p, "VmRSS") for n, p in named.items()}
            base = tree.processed()
            t0 = time.perf_counter()
            for start in range(0, args.addresses, chunk):
                stream = b"".join(
                    frame(pre_register(str(ipaddress.IPv4Address(BASE + i)), i))
                    for i in range(start, min(start + chunk, args.addresses))
                )
                tree.load.send(stream)
            while tree.processed() - base < args.addresses and time.perf_counter() - t0 < 600:
                time.sleep(0.2)
            elapsed = time.perf_counter() - t0
            after = {n: status_kb(p, "VmRSS") for n, p in named.items()}
            peak = {n: status_kb(p, "VmHWM") for n, p in named.items()}
            sup = tree.supervisor_stats()
            workers = [control.worker_stats(tree.rd, i) for i in range(args.workers)]
        finally:
            code = tree.stop()
    result = {
        "addresses": args.addresses,
        "processed": sum(w["processed"] for w in workers) - base,
        "dropped": sum(sup["dropped_per_worker"]),
        "seconds": round(elapsed, 1),
        "tracked_ips": [w.get("tracked_ips") for w in workers],
        "evictions": [w.get("evictions") for w in workers],
        # RSS a worker gained per source it tracks (the engine's state + allocator overhead)
        "worker_rss_bytes_per_tracked_ip": {
            f"worker-{i}": round((after[f"worker-{i}"] - idle[f"worker-{i}"]) * 1024
                                 / max(1, w.get("tracked_ips") or 0))
            for i, w in enumerate(workers) if f"worker-{i}" in after
        },
        "rss_idle_mb": {n: round(v / 1024, 1) for n, v in idle.items()},
        "rss_after_mb": {n: round(v / 1024, 1) for n, v in after.items()},
        "rss_total_after_mb": round(sum(after.values()) / 1024, 1),
        "rss_total_peak_mb": round(sum(peak.values()) / 1024, 1),
        "exit_code": code,
    }
    save_results("flood", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
