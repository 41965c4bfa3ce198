"""Whole-system benchmark: ESL socket in -> every event processed by a worker.

Runs `fsguard run` for real inside a private network namespace (real ipset), fed by
bench/loadgen.py's LoadServer whose listening socket lives in that namespace.

Phase 1 (throughput): N events of the realistic mix written as fast as fsguard reads
them; reports sustained events/s (last byte written -> last event processed), drops,
CPU seconds and peak RSS of the process tree.
Phase 2 (ban latency, idle, fresh tree): K addresses each cross the failed-auth
threshold one at a time; reports the firewall's measured latency from the threshold
event being read off the ESL socket to the kernel entry written (p50/p99), and checks
every address really is in the kernel set.

Needs root (network namespace, ipset). Usage: python bench/bench_pipeline.py [--events N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import control
from bench.figures import save_results
from bench.loadgen import LoadServer, frame, realistic_mix, register_failure
from bench.procfs import cpu_seconds, status_kb
from tests.netns_helpers import netns, run_in, socket_in

SET_NAME = "fsg-bench"


# Only the foundation's rule (failed auth in a sliding window): every other rule off.
MINIMAL_RULES: dict[str, Any] = {
    "auto_whitelist_on_success": False,
    "scanner_user_agents": [],
    "untrusted_networks": [],
    "rate_limit": {"enabled": False},
    "enumeration": {"enabled": False},
    "toll_fraud": {"enabled": False},
    "recidive": {"enabled": False},
    "rules": {"extension_scan": {"mode": "off"}},
}


def _config(tmp: Path, port: int, workers: int, minimal: bool = False) -> Path:
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": "18089"},
        "security": {
            "esl_port": str(port),
            "ipset_name": SET_NAME,
            "reconnect_backoff": "100ms",
            "max_failed_attempts": 5,
            # The load generator keeps sending from addresses fsguard has banned (the
            # kernel would drop them in real life); lift the per-IP rate limits so the
            # benchmark measures the pipeline, not thousands of uuid_kill round trips.
            "rate_limit": {"call_rate_limit": 10_000_000, "registration_limit": 10_000_000},
        },
        "paths": {"runtime_dir": str(tmp / "run"), "state_dir": str(tmp / "state")},
        "workers": {"count": workers, "queue_size": 8192},
        "logging": {"format": "human", "level": "warning"},
    }
    if minimal:
        security = cfg["security"]
        security.update({k: v for k, v in MINIMAL_RULES.items() if k != "rate_limit"})
        security["rate_limit"] = {**security["rate_limit"], **MINIMAL_RULES["rate_limit"]}
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


class Tree:
    """A running `fsguard run` inside namespace `ns`, fed by a LoadServer."""

    def __init__(self, ns: str, tmp: Path, workers: int, minimal: bool = False) -> None:
        listener = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.load = LoadServer(sock=listener)
        self.tmp = tmp
        self.rd = str(tmp / "run")
        cfg = _config(tmp, self.load.port, workers, minimal)
        fsguard = Path(sys.executable).parent / "fsguard"
        self.log = open(tmp / "fsguard.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, str(fsguard), "run", "--config", str(cfg)],
            stdout=self.log, stderr=self.log,
        )
        if not self.load.subscribed.wait(30):
            raise RuntimeError("fsguard did not subscribe; see " + str(tmp / "fsguard.log"))
        self.workers = workers

    def pids(self) -> list[int]:
        return list(self.named_pids().values())

    def named_pids(self) -> dict[str, int]:
        named = {"supervisor": self.proc.pid}
        named.update({c["name"]: c["pid"] for c in control.supervisor_children(self.rd)
                      if c["pid"]})  # fmt: skip
        return named

    def processed(self) -> int:
        total = 0
        for i in range(self.workers):
            with contextlib.suppress(control.PeerUnavailable):
                total += int(control.worker_stats(self.rd, i)["processed"])
        return total

    def supervisor_stats(self) -> dict[str, Any]:
        return control.supervisor_stats(self.rd)

    def firewall_stats(self) -> dict[str, Any]:
        return control.firewall_stats(self.rd)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(15)
        self.load.close()
        self.log.close()
        return code


def throughput(ns: str, events: int, workers: int, minimal: bool = False) -> dict[str, Any]:
    print(f"building {events} events ...", flush=True)
    stream = realistic_mix(events)
    with tempfile.TemporaryDirectory(prefix="fsg-bench-") as tmpdir:
        tree = Tree(ns, Path(tmpdir), workers, minimal)
        try:
            time.sleep(1.0)
            base = tree.processed()
            named = tree.named_pids()
            pids = list(named.values())
            per0 = {name: cpu_seconds(pid, children=False) for name, pid in named.items()}
            cpu0 = sum(per0.values())
            t0 = time.perf_counter()
            writer = threading.Thread(target=tree.load.send, args=(stream,))
            writer.start()
            deadline = time.monotonic() + 300
            while tree.processed() - base < events and time.monotonic() < deadline:
                time.sleep(0.05)
            t1 = time.perf_counter()
            writer.join()
            done = tree.processed() - base
            per1 = {name: cpu_seconds(pid, children=False) for name, pid in named.items()}
            cpu1 = sum(per1.values())
            sup = tree.supervisor_stats()
            rss_kb = sum(status_kb(p, "VmHWM") for p in pids)
            elapsed = t1 - t0
            result = {
                "events": events,
                "processed": done,
                "seconds": round(elapsed, 3),
                "events_per_second": round(done / elapsed),
                "dropped": sum(sup["dropped_per_worker"]),
                "cpu_seconds": round(cpu1 - cpu0, 2),
                "cpu_cores_used": round((cpu1 - cpu0) / elapsed, 2),
                "cpu_seconds_per_process": {n: round(per1[n] - per0[n], 2) for n in named},
                "peak_rss_mb_tree": round(rss_kb / 1024, 1),
                "processes": len(pids),
                "workers": workers,
            }
        finally:
            result_code = tree.stop()
        result["exit_code"] = result_code
    return result


def latency(ns: str, bans: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fsg-bench-") as tmpdir:
        tree = Tree(ns, Path(tmpdir), workers)
        addrs = [f"203.0.{117 + i // 250}.{i % 250 + 1}" for i in range(bans)]
        try:
            time.sleep(1.0)
            for seq, ip in enumerate(addrs):
                tree.load.send(b"".join(frame(register_failure(ip, "1000", seq)) for _ in range(4)))
                time.sleep(0.005)
                tree.load.send(frame(register_failure(ip, "1000", seq)))
                time.sleep(0.02)  # idle between bans
            time.sleep(0.5)
            fw = tree.firewall_stats()
            missing = [ip for ip in addrs
                       if run_in(ns, ["ipset", "test", SET_NAME, ip], check=False).returncode != 0]
        finally:
            tree.stop()
    return {
        "bans": bans,
        "missing_from_kernel": len(missing),
        "ban_latency_p50_ms": None if fw.get("ban_latency_p50") is None
        else round(fw["ban_latency_p50"] * 1000, 2),
        "ban_latency_p99_ms": None if fw.get("ban_latency_p99") is None
        else round(fw["ban_latency_p99"] * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--bans", type=int, default=200)
    parser.add_argument("--workers", type=int, default=0, help="0 = fsguard's default")
    parser.add_argument("--compare-minimal", action="store_true",
                        help="also measure with only the failed-auth rule enabled")
    args = parser.parse_args()
    from shared.config import Config, worker_count

    workers = args.workers or worker_count(Config())
    with netns("fsgbench") as ns:
        results: dict[str, Any] = {"throughput": throughput(ns, args.events, workers)}
        if args.compare_minimal:
            results["throughput_failed_auth_rule_only"] = throughput(
                ns, args.events, workers, minimal=True)
        results["latency"] = latency(ns, args.bans, workers)
    save_results("pipeline", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
