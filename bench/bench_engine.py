"""Benchmark of the detection engine.

1. Decoding: msgspec Struct (fsguard_workers.events) vs json.loads, on the real
   capture's event bodies (all of them, and the security events only).
2. handle(): µs/event on the realistic mix (70% sofia::register from 256
   addresses, 15% CHANNEL_CREATE, 10% register_failure from 32 addresses,
   5% sofia::wrong_call_state), built from real capture bodies.
3. Memory: bytes per tracked source (tracemalloc) under a flood of distinct
   spoofed addresses, extrapolated to 1,000,000 addresses.

Run: .venv/bin/python bench/bench_engine.py [--quick]
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fsguard_workers.engine import DetectionEngine  # noqa: E402
from fsguard_workers.events import EventDecoder, Kind, kind_of  # noqa: E402
from shared.config import Config  # noqa: E402

CAPTURE = ROOT / "tests" / "fixtures" / "capture_json.bin"
IP_KEYS = (b'"network-ip":"', b'"network_ip":"', b'"Caller-Network-Addr":"',
           b'"variable_sip_network_ip":"', b'"variable_sip_received_ip":"')  # fmt: skip


def frames(data: bytes) -> list[bytes]:
    bodies, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n\n", pos)
        head = dict(line.split(": ", 1) for line in data[pos:end].decode().split("\n"))
        n = int(head.get("Content-Length", "0"))
        if head.get("Content-Type") == "text/event-json":
            bodies.append(data[end + 2 : end + 2 + n])
        pos = end + 2 + n
    return bodies


def with_ip(body: bytes, ip: str) -> bytes:
    for key in IP_KEYS:
        body = body.replace(key + b'127.0.0.1"', key + ip.encode() + b'"')
    return body


def per_call_us(call: Callable[[bytes], object], items: list[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            call(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def bench_decoding(bodies: list[bytes], rounds: int) -> None:
    decoder = EventDecoder()
    security = [b for b in bodies if kind_of(decoder.decode(b)) is not Kind.OTHER]
    print("== decoding (real capture bodies) ==")
    for label, items in (("all events", bodies), ("security events", security)):
        avg = sum(map(len, items)) / len(items)
        t_ms = per_call_us(decoder.decode, items, rounds)
        t_js = per_call_us(json.loads, items, rounds)
        print(f"{label:16s} n={len(items):4d} avg {avg:6.0f} B: msgspec Struct {t_ms:6.2f} µs, "
              f"json.loads {t_js:6.2f} µs -> {t_js / t_ms:4.1f}x faster")  # fmt: skip


def realistic_mix(bodies: list[bytes], n: int) -> list[bytes]:
    def first(pred: str) -> bytes:
        return next(b for b in bodies if pred in json.loads(b).values())

    register = first("sofia::register")
    failure = first("sofia::register_failure")
    wcs = first("sofia::wrong_call_state")
    call = next(
        b for b in bodies
        if json.loads(b).get("Event-Name") == "CHANNEL_CREATE"
        and json.loads(b).get("variable_sip_authorized") == "true"
    )  # fmt: skip
    reg_ips = [f"198.51.{i // 200}.{i % 200 + 1}" for i in range(256)]
    bad_ips = [f"203.0.113.{i + 1}" for i in range(32)]
    pools = [
        (0.70, [with_ip(register, ip) for ip in reg_ips]),
        (0.15, [with_ip(call, ip) for ip in reg_ips]),
        (0.10, [with_ip(failure, ip) for ip in bad_ips]),
        (0.05, [with_ip(wcs, ip) for ip in bad_ips]),
    ]
    rng = random.Random(7)
    weights = [w for w, _ in pools]
    out = []
    for _ in range(n):
        (pool,) = rng.choices([p for _, p in pools], weights)
        out.append(rng.choice(pool))
    return out


def bench_handle(bodies: list[bytes], n: int, rounds: int) -> None:
    mix = realistic_mix(bodies, n)
    print("== handle() on the realistic mix ==")
    best = float("inf")
    for _ in range(rounds):
        engine = DetectionEngine(Config())
        handle = engine.handle
        gc.collect()
        start = time.perf_counter()
        for i, body in enumerate(mix):
            handle(body, 0.0)
            if i & 1023 == 0:
                engine.drain()
                engine.tick()
        best = min(best, time.perf_counter() - start)
        stats = engine.stats()
    print(f"{n} events: {best / n * 1e6:.2f} µs/event ({n / best:,.0f} events/s per worker)")
    print("  stats:", {k: v for k, v in stats.items() if v})


def bench_memory(bodies: list[bytes], n: int) -> None:
    print("== memory per tracked source (distinct spoofed addresses) ==")
    templates = {
        "sofia::pre_register": next(b for b in bodies if b"sofia::pre_register" in b),
        "sofia::register_failure": next(b for b in bodies if b"sofia::register_failure" in b),
    }
    for label, template in templates.items():
        head, tail = template.split(b'"network-ip":"127.0.0.1"', 1)
        config = Config()
        config.workers.max_tracked_ips = n
        config.security.enumeration.enabled = False
        engine = DetectionEngine(config)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            ip = f"{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.7"
            engine.handle(head + b'"network-ip":"' + ip.encode() + b'"' + tail, 0.0)
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        tracked = engine.stats()["tracked_ips"]
        per = used / tracked
        print(f"{label:24s} {tracked} tracked: {per:5.0f} B/source -> "
              f"1,000,000 sources = {per * 1e6 / 2**20:5.0f} MiB in all")  # fmt: skip


def main() -> None:
    quick = "--quick" in sys.argv
    bodies = frames(CAPTURE.read_bytes())
    bench_decoding(bodies, rounds=5 if quick else 30)
    bench_handle(bodies, n=20_000 if quick else 200_000, rounds=1 if quick else 3)
    bench_memory(bodies, n=20_000 if quick else 200_000)


if __name__ == "__main__":
    main()
