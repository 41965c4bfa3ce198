"""Process-tree figures for GET /system/stats, read from /proc (Linux)."""

from __future__ import annotations

import os
from typing import NamedTuple

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class ProcSample(NamedTuple):
    rss_bytes: int
    cpu_seconds: float
    threads: int
    uptime_seconds: float


def _boot_uptime() -> float:
    with open("/proc/uptime") as fh:
        return float(fh.read().split()[0])


def sample(pid: int) -> ProcSample | None:
    """RSS, CPU time, threads and age of one process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/statm") as fh:
            statm = fh.read().split()
        uptime = _boot_uptime()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # fields from #3 (state) on
    utime, stime = int(fields[11]), int(fields[12])
    threads = int(fields[17])
    start = int(fields[19]) / _TICKS
    return ProcSample(
        rss_bytes=int(statm[1]) * _PAGE,
        cpu_seconds=(utime + stime) / _TICKS,
        threads=threads,
        uptime_seconds=max(0.0, uptime - start),
    )
