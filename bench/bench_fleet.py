"""Fleet (CrowdSec LAPI) pull path: stream-apply rate and memory with N remote decisions.

    sudo .venv/bin/python bench/bench_fleet.py [--count 100000]   (needs `make crowdsec`)

A real CrowdSec 1.4.6 LAPI on loopback holds `count` ban decisions (`cscli decisions
import`). The real firewall process runs in a network namespace (real ipset, SQLite);
the real connector (`python -m fsguard_fleet`) pulls the startup stream, validates it and
hands it to the firewall in one `crowdsec_apply`. Measured: time from the connector's
start to every decision in the firewall's store, the firewall's own apply time, VmRSS of
the firewall before/after and the connector's peak RSS (VmHWM).
Writes bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared import addresses  # noqa: E402
from shared.control import PeerUnavailable, request  # noqa: E402
from tests.crowdsec_lapi import running_lapi  # noqa: E402
from tests.netns_helpers import netns, run_in  # noqa: E402

SET = "fsg-bench-fleet"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def stats(runtime: str) -> dict[str, object]:
    try:
        reply = request(addresses.firewall_control(runtime), "stats", timeout=10)
    except PeerUnavailable:
        return {}
    return dict(reply.data) if reply.ok else {}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fsg-bench-fleet-"))
    with running_lapi(tmp / "lapi") as lapi, netns("fsgbfl") as ns:
        lapi.add_bouncer("bench", "bench-bouncer-key-0123456789")
        csv = tmp / "decisions.csv"
        rows = [f"4h,ip,10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(args.count)]
        csv.write_text("duration,scope,value\n" + "\n".join(rows) + "\n")
        t0 = time.perf_counter()
        lapi.cscli("decisions", "import", "-i", str(csv), "--type", "ban", "-R", "bench")
        print(f"cscli import of {args.count}: {time.perf_counter() - t0:.1f}s")
        runtime = str(tmp / "run")
        config = {
            "security": {
                "ipset_name": SET, "trusted_networks": ["127.0.0.0/8"],
                "crowdsec": {"enabled": True, "lapi_url": lapi.url, "poll_interval": "1h",
                             "bouncer_api_key": "bench-bouncer-key-0123456789",
                             "timeout": "30s"},
            },
            "paths": {"runtime_dir": runtime, "state_dir": str(tmp / "state")},
            "logging": {"level": "info", "format": "human"},
        }  # fmt: skip
        cfg_path = tmp / "config.json"
        cfg_path.write_text(json.dumps(config))
        log = open(tmp / "fw.log", "wb")  # noqa: SIM115
        fw = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m",
                               "fsguard_firewall", "--config", str(cfg_path)],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            while not stats(runtime):
                time.sleep(0.1)
            pid = int(str(stats(runtime)["pid"]))  # the firewall answers with its own pid
            before = rss_mb(pid)
            start = time.perf_counter()
            conn = subprocess.Popen([sys.executable, "-m", "fsguard_fleet", "--config",
                                     str(cfg_path)], cwd=REPO,
                                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            try:
                while True:
                    s = stats(runtime)
                    if s.get("crowdsec_remote_decisions") == args.count:
                        break
                    time.sleep(0.05)
                total = time.perf_counter() - start
                conn_peak = rss_mb(conn.pid, "VmHWM")
            finally:
                conn.terminate()
                conn.wait(10)
            after = rss_mb(pid)
            members = run_in(ns, ["ipset", "list", SET, "-t"], check=True).stdout
            in_kernel = next(int(line.split(":")[1]) for line in members.splitlines()
                             if line.startswith("Number of entries"))  # fmt: skip
            result = {
                "count": args.count,
                "in_kernel": in_kernel,
                "connector_start_to_applied_s": round(total, 3),
                "rate_per_s": round(args.count / total),
                "firewall_rss_before_mb": round(before, 1),
                "firewall_rss_after_mb": round(after, 1),
                "connector_peak_rss_mb": round(conn_peak, 1),
                "last_apply": s.get("crowdsec_last_apply"),
            }
        finally:
            fw.terminate()
            fw.wait(10)
            run_in(ns, ["iptables", "-F"], check=False)
    print(json.dumps(result, indent=2))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("needs root (network namespace, ipset)")
    sys.exit(main())
