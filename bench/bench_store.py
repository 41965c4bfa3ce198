"""SQLite store throughput: new bans per second, start-up load, open, expiry.

    .venv/bin/python bench/bench_store.py [--count 100000] [--batch 1000] [--dir /var/tmp]

Runs on a real file in --dir (put it on the disk the state dir will live on: fsync cost
depends on it). Prints one JSON object; targets: add > 20,000 bans/s, load 100k < 1 s.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsguard_firewall.store import BanRecord, Store


def records(count: int, now: float, first: str = "100.64.0.0") -> list[BanRecord]:
    base = int(ipaddress.IPv4Address(first))
    return [
        BanRecord(
            key=str(ipaddress.IPv4Address(base + i)),
            rule="failed_auth",
            reason="Exceeded max failed registrations (5)",
            created=now,
            expires=now + 3600,
            decision_id=f"w{i % 8}-1234-{i}",
            user=f"10{i % 1000:03d}",
            evidence={"count": 5, "user_agent": "friendly-scanner"},
        )
        for i in range(count)
    ]


def add_rate(path: str, recs: list[BanRecord], batch: int, synchronous: str) -> float:
    with Store(path) as store:
        store._db.execute(f"PRAGMA synchronous={synchronous}")  # bench-only comparison
        started = time.perf_counter()
        for i in range(0, len(recs), batch):
            store.add_bans(recs[i : i + batch])
        elapsed = time.perf_counter() - started
        assert store.ban_count() == len(recs)
    return len(recs) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    now = time.time()
    recs = records(args.count, now)
    out: dict[str, object] = {"count": args.count, "batch": args.batch}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for mode in ("NORMAL", "FULL"):
            path = os.path.join(tmp, f"{mode}.db")
            out[f"add_bans_per_s_{mode.lower()}"] = round(add_rate(path, recs, args.batch, mode))
        path = os.path.join(tmp, "FULL.db")  # the shipped setting
        out["file_mb"] = round(os.path.getsize(path) / 2**20, 1)

        started = time.perf_counter()
        store = Store(path)
        out["open_s"] = round(time.perf_counter() - started, 3)  # includes quick_check
        loads = []
        for _ in range(5):
            started = time.perf_counter()
            active = store.active_bans(now)
            loads.append(time.perf_counter() - started)
            assert len(active) == args.count
        out["active_bans_s_median"] = round(statistics.median(loads), 3)
        out["active_bans_s_max"] = round(max(loads), 3)

        started = time.perf_counter()
        for i in range(0, len(recs), args.batch):  # every key re-banned: dedupe path
            assert store.add_bans(recs[i : i + args.batch]) == []
        out["rebans_deduped_per_s"] = round(len(recs) / (time.perf_counter() - started))

        per_call = []
        while True:
            started = time.perf_counter()
            gone = store.expire(now + 7200, limit=1000)
            if not gone:
                break
            per_call.append(time.perf_counter() - started)
        out["expire_1000_s_median"] = round(statistics.median(per_call), 4)
        out["expire_1000_s_max"] = round(max(per_call), 4)
        store.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
