"""py-spy profile of every fsguard process under one honest workload.

Starts the tree as bench_honest does, offers a workload (mix or flood) at a fixed rate
for --seconds, runs `py-spy record --native --format raw` on each process meanwhile, and
writes bench/results/profile-<workload>-<label>.txt: per process, the CPU it used and its
hottest functions (self samples) and hottest call paths (inclusive samples).
Needs root. Usage: python bench/profile_honest.py --workload mix --rate 60000
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_honest import HonestTree
from bench.frames import Templates, flood_frames, mix_frames, mix_mean_size
from bench.openloop import build_stream
from bench.procfs import cpu_seconds
from tests.netns_helpers import netns

OUT = Path(__file__).resolve().parent / "results"


def summarize(raw: str, top: int = 25) -> str:
    """Self and inclusive sample counts per function from py-spy's raw (folded) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"samples: {total}", "self:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("inclusive:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["mix", "flood"], default="mix")
    parser.add_argument("--rate", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--label", default="before")
    args = parser.parse_args()
    t = Templates()
    n = int(args.rate * args.seconds)
    frames = mix_frames(t, n) if args.workload == "mix" else flood_frames(t, 0, n)
    stream, ends = build_stream(list(frames))
    py_spy = Path(sys.executable).parent / "py-spy"
    report = [f"workload {args.workload} offered at {args.rate}/s for {args.seconds} s "
              f"(bench/profile_honest.py, py-spy --native, 100 Hz)"]
    with netns("fsgprof") as ns, tempfile.TemporaryDirectory(prefix="fsg-prof-") as tmp:
        tree = HonestTree(ns, Path(tmp), mean_frame=mix_mean_size(t))
        try:
            named = tree.named_pids()
            spies = {}
            for name, pid in named.items():
                raw = Path(tmp) / f"{name}.raw"
                spies[name] = (raw, subprocess.Popen(
                    [str(py_spy), "record", "--native", "--format", "raw",
                     "-d", str(int(args.seconds)), "-o", str(raw), "--pid", str(pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            cpu0 = {k: cpu_seconds(p) for k, p in named.items()}
            bench0 = time.process_time()
            time.sleep(0.5)
            res: dict[str, object] = {}
            th = threading.Thread(target=lambda: res.update(
                r=tree.sender.run(stream, ends, args.rate)))
            t0 = time.perf_counter()
            th.start()
            th.join()
            elapsed = time.perf_counter() - t0
            report.append(f"bench process (sender): {(time.process_time() - bench0) / elapsed:.2f}"
                          " cores")
            cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in named.items()}
            for _, proc in spies.values():
                proc.wait(60)
            step = res["r"]
            report.append(f"dropped at source: {getattr(step, 'dropped_at_source', '?')}")
            for name, (raw, _) in spies.items():
                report.append(f"\n== {name}: {cpu[name] / elapsed:.2f} cores")
                text = raw.read_text() if raw.exists() else ""
                report.append(summarize(text) if text else "(no samples)")
        finally:
            tree.stop()
    OUT.mkdir(exist_ok=True)
    path = OUT / f"profile-{args.workload}-{args.label}.txt"
    path.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
