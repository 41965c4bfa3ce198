"""Firewall throughput: new bans per second, inside a throwaway network namespace.

    sudo .venv/bin/python bench/bench_firewall.py [--count 20000] [--batch 1000]

1. kernel: KernelFirewall.apply in batches (one `ipset restore` per batch);
2. baseline: one `ipset add` process per address (what the Go program does), on a sample;
3. process: the real firewall process, BanDecisions pushed over ZeroMQ until the
   kernel applied them all (includes decode, validation, dedupe, store, PUB, logging).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import zmq  # noqa: E402

from bench import control  # noqa: E402
from bench import firewall_run as fw_run  # noqa: E402
from fsguard_firewall.kernel import KernelFirewall  # noqa: E402
from shared import addresses  # noqa: E402
from shared.messages import BanDecision, encode  # noqa: E402
from tests.netns_helpers import netns, run_in  # noqa: E402


def bench_kernel(count: int, batch: int) -> float:
    with netns("bench") as ns:
        fw = KernelFirewall(
            "bench", "INPUT", default_timeout=3600, command_prefix=["ip", "netns", "exec", ns]
        )
        fw.ensure_setup()
        elapsed = fw_run.apply_in_batches(fw, fw_run.addrs(count, "100.64.0.0"), batch)
    return count / elapsed


def bench_per_ip(sample: int) -> float:
    with netns("benchb") as ns:
        run_in(ns, ["ipset", "create", "b", "hash:ip", "timeout", "3600"], check=True)
        t0 = time.perf_counter()
        for a in fw_run.addrs(sample, "100.65.0.0"):
            run_in(ns, ["ipset", "add", "b", str(a), "timeout", "3600", "-exist"], check=True)
        return sample / (time.perf_counter() - t0)


def bench_process(count: int) -> tuple[float, dict[str, Any]]:
    with netns("benchp") as ns, tempfile.TemporaryDirectory() as tmp:
        security = {"ipset_name": "benchp", "block_duration": 3600}
        config, runtime = fw_run.write_config(Path(tmp), security)
        popen = fw_run.start(ns, config, output=None)
        try:
            fw_run.wait_ready(runtime, popen, timeout=10)
            push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, 0)
            push.connect(addresses.firewall_decisions(runtime))
            singles: list[float] = []
            for i, a in enumerate(fw_run.addrs(50, "100.67.0.0")):
                t_single = time.perf_counter()
                push.send(encode(BanDecision(id=f"s-{i}", ip=str(a), rule="bench",
                                             reason="bench", duration=3600)))  # fmt: skip
                while not control.blacklisted(runtime, str(a)):
                    pass
                singles.append(time.perf_counter() - t_single)
            singles.sort()
            print(f"single decision -> kernel -> visible: p50={singles[25] * 1000:.1f} ms "
                  f"max={singles[-1] * 1000:.1f} ms (50 sequential, idle firewall)")  # fmt: skip
            t0 = time.perf_counter()
            for i, a in enumerate(fw_run.addrs(count, "100.66.0.0")):
                push.send(
                    encode(BanDecision(id=f"b-{i}", ip=str(a), rule="bench", reason="bench",
                                       duration=3600, event_ts=time.time()))
                )  # fmt: skip
            while True:
                stats = control.firewall_stats(runtime, timeout=10)
                if stats["bans_applied"] >= count + 50:
                    break
                time.sleep(0.01)
            elapsed = time.perf_counter() - t0
            push.close(0)
            entries = fw_run.ipset_entries(ns, "benchp")
            assert entries == count + 50, entries
            return count / elapsed, stats
        finally:
            fw_run.stop(popen)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--per-ip-sample", type=int, default=300)
    args = parser.parse_args()
    if fw_run.netns_missing():
        return 0
    rate = bench_kernel(args.count, args.batch)
    print(f"kernel apply:   {rate:10,.0f} bans/s ({args.count} addresses, batches of {args.batch})")
    rate_one = bench_kernel(args.count, args.count)
    print(f"kernel apply:   {rate_one:10,.0f} bans/s ({args.count} addresses, one batch)")
    base = bench_per_ip(args.per_ip_sample)
    print(f"per-IP ipset:   {base:10,.0f} bans/s (one process per address, Go-style)")
    prate, stats = bench_process(args.count)
    print(f"process e2e:    {prate:10,.0f} bans/s ({args.count} decisions over ZeroMQ)")
    p50, p99 = stats["ban_latency_p50"], stats["ban_latency_p99"]
    print(
        f"  batches={stats['batches']} ban latency p50={p50:.3f}s p99={p99:.3f}s (queueing incl.)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
