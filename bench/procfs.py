"""/proc accounting for the benchmarks: a process tree, its memory and CPU time."""

from __future__ import annotations

import os
from pathlib import Path


def tree_pids(root: int) -> list[int]:
    """`root` and every descendant (a /proc scan)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _kb(path: str, field: str) -> int:
    """The `field:` line's value (kB) in a /proc file; 0 when absent or gone."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def status_kb(pid: int, field: str) -> int:
    """A /proc/PID/status figure in kB: VmRSS (resident now), VmHWM (its peak) ..."""
    return _kb(f"/proc/{pid}/status", field)


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages split between the processes sharing them."""
    return _kb(f"/proc/{pid}/smaps_rollup", "Pss")


def tree_pss_mb(root: int) -> float:
    return round(sum(pss_kb(p) for p in tree_pids(root)) / 1024, 1)


def cpu_seconds(pid: int, children: bool = True) -> float:
    """utime + stime, plus (`children`) those of reaped children (the firewall's ipset
    runs)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in tree_pids(root)}


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(p, 0.0) for p, v in after.items())
