"""GET /system/stats: process-tree figures read from /proc (Linux), in the Go shape plus
fsguard's own keys."""

from __future__ import annotations

import gc
import os
import platform
import sys
from typing import NamedTuple

from fastapi import FastAPI
from starlette.responses import Response

from fsguard_api.models import (
    MsgspecResponse,
    ProcessStats,
    SystemMemory,
    SystemStats,
)
from fsguard_api.openapi import doc
from fsguard_api.peers import Peers
from shared.ops import supervisor as sup_ops
from shared.ops.base import Empty

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class ProcSample(NamedTuple):
    rss_bytes: int
    cpu_seconds: float
    threads: int
    uptime_seconds: float
    peak_rss_bytes: int = 0  # VmHWM: the most this process ever held


def _peak_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


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
        peak_rss_bytes=_peak_rss(pid),
    )


def add_system_route(app: FastAPI, peers: Peers, version: str, workers: int) -> None:
    @app.get("/system/stats", responses=doc(SystemStats))
    async def system_stats() -> Response:
        sup = await peers.ask(sup_ops.STATS, Empty())
        members: list[tuple[str, str, int | None, int]] = [("supervisor", "supervisor", sup.pid, 0)]
        members += [(c.name, c.role, c.pid, c.restarts) for c in sup.children]
        if os.getpid() not in {pid for _, _, pid, _ in members}:
            members.append(("api", "api", os.getpid(), 0))  # a separate unit (systemd)
        processes: list[ProcessStats] = []
        pids = [pid for _, _, pid, _ in members if pid]
        for name, role, pid, restarts in members:
            s = sample(pid) if pid else None
            processes.append(
                ProcessStats(
                    name=name,
                    role=role,
                    pid=pid,
                    running=s is not None,
                    rssMb=round(s.rss_bytes / 1048576, 1) if s else 0.0,
                    cpuSeconds=round(s.cpu_seconds, 2) if s else 0.0,
                    cpuPercent=round(100 * s.cpu_seconds / s.uptime_seconds, 2)
                    if s and s.uptime_seconds > 0
                    else 0.0,
                    threads=s.threads if s else 0,
                    uptimeSeconds=round(s.uptime_seconds, 1) if s else 0.0,
                    restarts=restarts,
                )
            )
        rss = sum(p.rssMb for p in processes)
        peak = sum((s.peak_rss_bytes for s in map(sample, pids) if s), 0) / 1048576
        threads = sum(p.threads for p in processes)
        return MsgspecResponse(
            SystemStats(
                version=version,
                goroutines=threads,
                pythonVersion=platform.python_version(),
                uptimeSeconds=round(sup.uptime, 1),
                workerCount=workers,
                cpuCores=os.cpu_count() or 1,
                processCount=sum(1 for p in processes if p.running),
                threads=threads,
                memory=SystemMemory(
                    allocMb=int(rss),
                    totalAllocMb=int(max(peak, rss)),
                    sysMb=int(rss),
                    gcRuns=sum(int(g.get("collections", 0)) for g in gc.get_stats()),
                    heapObjects=sys.getallocatedblocks(),
                    rssMb=int(rss),
                ),
                processes=processes,
            )
        )
