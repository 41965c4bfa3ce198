"""Memory under a spoofed-source flood: 1,000,000 distinct addresses, one
`sofia::pre_register` each (what a UDP flood with forged sources produces).

Reports the process tree's total RSS (current and peak) after the flood, the events
each worker processed, drops, and evictions. Needs root (runs in a namespace).
Usage: python bench/bench_flood.py [--addresses N]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_pipeline import Tree, _proc_hwm_kb
from bench.loadgen import _std, frame
from shared import addresses
from shared.control import request
from tests.netns_helpers import netns

BASE = int(ipaddress.IPv4Address("100.64.0.0"))


def pre_register(ip: str, seq: int) -> dict[str, str]:
    ev = _std("CUSTOM", "sofia::pre_register", seq, "sofia_reg.c",
              "sofia_reg_handle_register_token", 1810)
    ev.update({
        "profile-name": "internal", "from-user": "1000", "from-host": "pbx.example.com",
        "contact": f'"" <sip:1000@{ip}:5060>', "call-id": f"{seq}@{ip}", "rpid": "unknown",
        "status": "Registered(UDP)", "expires": "300", "to-user": "1000",
        "to-host": "pbx.example.com", "network-ip": ip, "network-port": "5060",
        "user-agent": "Z 5.5.5",
    })
    return ev


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


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
            idle = {n: _rss_kb(p) for n, p in named.items()}
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
            after = {n: _rss_kb(p) for n, p in named.items()}
            peak = {n: _proc_hwm_kb(p) for n, p in named.items()}
            sup = tree.supervisor_stats()
            workers = [request(addresses.worker_control(tree.rd, i), "stats", timeout=2).data
                       for i in range(args.workers)]
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
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "flood.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
