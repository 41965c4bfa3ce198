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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import control  # noqa: E402
from bench.figures import save_results  # noqa: E402
from bench.firewall_run import ipset_entries, start, wait_ready, write_config  # noqa: E402
from bench.procfs import status_kb  # noqa: E402
from tests.crowdsec_lapi import running_lapi  # noqa: E402
from tests.netns_helpers import netns, run_in  # noqa: E402

SET = "fsg-bench-fleet"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    return status_kb(pid, field) / 1024


def stats(runtime: str) -> dict[str, Any]:
    """The firewall's counters; {} while it is too busy to answer."""
    try:
        return control.firewall_stats(runtime, timeout=10)
    except (control.PeerUnavailable, control.ControlRefused):
        return {}


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
        config, runtime = write_config(tmp, {
            "ipset_name": SET, "trusted_networks": ["127.0.0.0/8"],
            "crowdsec": {"enabled": True, "lapi_url": lapi.url, "poll_interval": "1h",
                         "bouncer_api_key": "bench-bouncer-key-0123456789", "timeout": "30s"},
        }, logging={"level": "info", "format": "human"})  # fmt: skip
        log = open(tmp / "fw.log", "wb")  # noqa: SIM115
        fw = start(ns, config, output=log)
        try:
            wait_ready(runtime, fw)
            pid = int(control.firewall_stats(runtime)["pid"])  # the firewall's own pid
            before = rss_mb(pid)
            t_start = time.perf_counter()
            conn = subprocess.Popen([sys.executable, "-m", "fsguard_fleet", "--config",
                                     str(config)], cwd=REPO,
                                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            try:
                while True:
                    s = stats(runtime)
                    if s.get("crowdsec_remote_decisions") == args.count:
                        break
                    time.sleep(0.05)
                total = time.perf_counter() - t_start
                conn_peak = rss_mb(conn.pid, "VmHWM")
            finally:
                conn.terminate()
                conn.wait(10)
            after = rss_mb(pid)
            in_kernel = ipset_entries(ns, SET)
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
    save_results("fleet", result)
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("needs root (network namespace, ipset)")
    sys.exit(main())
