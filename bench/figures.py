"""The benchmarks' figures: latency percentiles, and where results are written
(bench/results/NAME.json)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q <= 1) of `values`."""
    data = sorted(values)
    return data[min(len(data) - 1, max(0, round(q * len(data)) - 1))]


def latency_ms(seconds: list[float], quantiles: tuple[float, ...] = (0.99,)) -> dict[str, float]:
    """Median, each of `quantiles` and max of `seconds` (not empty), in ms: p50_ms, p99_ms
    ..., max_ms."""
    ms = [v * 1000 for v in seconds]
    out = {"p50_ms": round(statistics.median(ms), 2)}
    for q in quantiles:
        out[f"p{round(q * 100)}_ms"] = round(percentile(ms, q), 2)
    out["max_ms"] = round(max(ms), 2)
    return out


def save_results(name: str, results: Any, show: bool = True) -> Path:
    """Write `results` to bench/results/`name`.json (and print them, with `show`)."""
    text = json.dumps(results, indent=2)
    if show:
        print(text)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(text + "\n")
    return path
