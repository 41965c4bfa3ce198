"""Throughput of the ESL framer on the real captures (one core, no sockets).

    .venv/bin/python bench/bench_esl_parser.py [--seconds 2] [--chunk 262144]

Feeds the capture in `--chunk`-byte reads (what the client's socket reads look like)
and reports frames/s for `FrameParser.feed` (Frame objects) and `feed_events` (the
client's hot path: JSON bodies only), plus plain_to_json conversions/s.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from fsguard_supervisor.esl_protocol import FrameParser, iter_capture_frames, plain_to_json

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Best-of-5 rate of fn (which returns the number of items it handled)."""
    best = 0.0
    for _ in range(5):
        items = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while time.perf_counter() < deadline:
            items += fn()
        best = max(best, items / (time.perf_counter() - start))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--chunk", type=int, default=256 * 1024)
    args = ap.parse_args()
    for name in ("capture_json.bin", "capture_plain.bin"):
        data = (FIXTURES / name).read_bytes()
        chunks = [data[i : i + args.chunk] for i in range(0, len(data), args.chunk)]
        count = len(list(iter_capture_frames(data)))

        def feed(chunks: list[bytes] = chunks) -> int:
            parser = FrameParser()
            return sum(len(parser.feed(c)) for c in chunks)

        def feed_events(chunks: list[bytes] = chunks) -> int:
            parser = FrameParser()
            n = 0
            for c in chunks:
                bodies, others = parser.feed_events(c)
                n += len(bodies) + len(others)
            return n

        assert feed() == count == feed_events()
        mb = len(data) / count / 1e6
        r1 = _rate(feed, args.seconds)
        r2 = _rate(feed_events, args.seconds)
        print(f"{name}: {count} frames, {len(data)} bytes, chunk {args.chunk}")
        print(f"  feed():        {r1:12,.0f} frames/s  ({r1 * mb:7.1f} MB/s)")
        print(f"  feed_events(): {r2:12,.0f} frames/s  ({r2 * mb:7.1f} MB/s)")
        if name == "capture_plain.bin":
            bodies = [f.body for f in iter_capture_frames(data)
                      if f.content_type == "text/event-plain"]

            def convert(bodies: list[bytes] = bodies) -> int:
                for b in bodies:
                    plain_to_json(b)
                return len(bodies)

            print(f"  plain_to_json: {_rate(convert, args.seconds):12,.0f} events/s")


if __name__ == "__main__":
    main()
