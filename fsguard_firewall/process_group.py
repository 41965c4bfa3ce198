"""Ending a kernel tool (ipset, nft) that ran past its timeout: the tools are started in
their own session, so the whole group goes, including any child holding their pipes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill a timed-out command and everything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)
