"""`make bench`: run every benchmark in bench/ and print their figures.

The pipeline and flood benchmarks need root (they run fsguard in a private network
namespace); they are skipped with a note otherwise. Results also land in bench/results/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (script, extra args, needs root)
BENCHES: list[tuple[str, list[str], bool]] = [
    ("bench_esl_parser.py", [], False),
    ("bench_engine.py", [], False),
    ("bench_store.py", [], False),
    ("bench_firewall.py", [], True),
    ("bench_reconcile.py", [], True),
    ("bench_backends.py", [], True),  # ipset vs nftables, side by side
    ("bench_metrics.py", [], True),
    # The whole system as a user runs it (issue 13): bench/results/honest.json, from which
    # readme_table.py regenerates README's performance table. (bench_pipeline.py and
    # bench_flood.py, closed-loop with raised rate limits, are kept for comparison only.)
    ("bench_honest.py", ["--return-wait", "100"], True),
    ("readme_table.py", ["--write"], False),
]


def main() -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    failed = []
    for script, args, needs_root in BENCHES:
        path = HERE / script
        if not path.exists():
            continue
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        if needs_root and os.geteuid() != 0:
            print("skipped: needs root (network namespace, ipset)")
            continue
        code = subprocess.call([sys.executable, str(path), *args], cwd=ROOT, env=env)
        if code != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
