"""Cost of `GET /metrics` with 8 workers, idle and under event load.

Runs `fsguard run` for real (supervisor, 8 workers, firewall, API) in a private network
namespace against the fake FreeSWITCH, then scrapes /metrics over real HTTP:

- idle: SCRAPES sequential scrapes;
- load: the same while a thread streams the realistic event mix through the ESL socket.

Reports, per phase, the client-side HTTP time (connect + request + full body) and the
API's own gather time (fsguard_scrape_duration_seconds: the concurrent `stats` requests to
all 10 processes), p50/p95/p99/max in ms, and the events processed meanwhile; plus the
worker-side cost per event of the per-event-name counter (`event_label`). Target: scrape
under 50 ms with 8 workers. Needs root. Usage: python bench/bench_metrics.py [--scrapes N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.parser import text_string_to_metric_families

from bench.figures import latency_ms, save_results
from bench.loadgen import channel_create, realistic_mix, register, register_failure
from fsguard_workers.process import event_label
from tests.test_metrics import FsguardSystem, fsguard_system

WORKERS = 8


def _summary(values: list[float]) -> dict[str, float]:
    return latency_ms(values, (0.95, 0.99))


def _processed(system: FsguardSystem) -> float:
    text = system.scrape()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "fsguard_worker_processed_total"
    )


def scrape_phase(system: FsguardSystem, scrapes: int) -> dict[str, Any]:
    http: list[float] = []
    gather: list[float] = []
    for _ in range(scrapes):
        t0 = time.perf_counter()
        text = system.scrape()
        http.append(time.perf_counter() - t0)
        for fam in text_string_to_metric_families(text):
            if fam.name == "fsguard_scrape_duration_seconds":
                gather.append(fam.samples[0].value)
            if fam.name == "fsguard_up":
                down = [s.labels["process"] for s in fam.samples if s.value != 1]
                assert not down, f"processes did not answer: {down}"
    return {"scrapes": scrapes, "http": _summary(http), "gather": _summary(gather)}


def load_phase(system: FsguardSystem, scrapes: int, seconds: float = 0.0) -> dict[str, Any]:
    """Stream events while scraping `scrapes` times (or, with scrapes=0, for `seconds`)."""
    stop = threading.Event()
    chunk = realistic_mix(5000, seed=7)

    def feed() -> None:
        while not stop.is_set():
            system.fake.send_raw(chunk)

    before = _processed(system)
    feeder = threading.Thread(target=feed, daemon=True)
    started = time.perf_counter()
    feeder.start()
    time.sleep(0.5)  # let the stream reach steady state
    result: dict[str, Any] = scrape_phase(system, scrapes) if scrapes else {"scrapes": 0}
    if not scrapes:
        time.sleep(seconds)
    stop.set()
    feeder.join(30)
    elapsed = time.perf_counter() - started
    time.sleep(1.0)
    result["events_processed"] = int(_processed(system) - before)
    result["events_per_second"] = round(result["events_processed"] / elapsed)
    result["seconds"] = round(elapsed, 2)
    return result


def label_cost() -> dict[str, float]:
    bodies = [
        json.dumps(ev, separators=(",", ":")).encode()
        for seq in range(3000)
        for ev in (
            register(f"198.51.100.{seq % 250}", "u", seq),
            channel_create(f"198.51.100.{seq % 250}", "u", seq),
            register_failure(f"203.0.113.{seq % 250}", "u", seq),
        )
    ]
    rounds = 20
    t0 = time.perf_counter()
    for _ in range(rounds):
        for body in bodies:
            event_label(body)
    per_event = (time.perf_counter() - t0) / (rounds * len(bodies))
    return {"event_label_ns_per_event": round(per_event * 1e9)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--workers", type=int, default=WORKERS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsg-bench-metrics-") as tmp, fsguard_system(
        Path(tmp), set_name="fsg-bmetrics", port=18094, workers=args.workers, log_format="json"
    ) as system:
        scrape_phase(system, 20)  # warm-up (imports, first connections)
        results: dict[str, Any] = {
            "workers": args.workers,
            "idle": scrape_phase(system, args.scrapes),
            "load": load_phase(system, args.scrapes),
        }
        results["load_seconds"] = results["load"]["seconds"] - 0.5
        # The same stream for as long, without scraping: the event rate must not drop.
        results["load_without_scrapes"] = load_phase(system, 0, seconds=results["load_seconds"])
    results.update(label_cost())
    results["target_ms"] = 50
    save_results("metrics", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
