"""Running a kernel tool (ipset, iptables, nft): started in its own session with piped
output, its input written at once, and on timeout the whole group killed, including any
child holding its pipes. The one home of this for both backends and their pending batches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable, Sequence

from .backend import FirewallError


def start(argv: Sequence[str], *, name: str, hint: str, stdin: bool) -> subprocess.Popen[str]:
    """Start `argv`; FirewallError naming the missing binary (`name` when the OS does not
    say) and how to install it (`hint`)."""
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise FirewallError(f"{exc.filename or name} not found: {hint}") from exc


def feed(proc: subprocess.Popen[str], text: str) -> None:
    """Write all of `text` to the tool's stdin and close it, so the tool works while the
    caller goes on (a pipe holds 64 KiB; beyond that the write paces itself on the tool's
    reading). A tool that died early is not an error here: its stderr says why."""
    if proc.stdin is None:
        return
    stdin, proc.stdin = proc.stdin, None  # communicate() must not touch it again
    with contextlib.suppress(BrokenPipeError):
        stdin.write(text)
    with contextlib.suppress(BrokenPipeError):
        stdin.close()


def finish(
    proc: subprocess.Popen[str],
    timeout: float,
    what: str,
    *,
    stdin: str | None = None,
    elements: Iterable[str] = (),
) -> tuple[str, str]:
    """(stdout, stderr) of the tool. Past `timeout` it is killed with its group and
    FirewallError "`what` timed out" is raised, failing every one of `elements` (read
    only then)."""
    try:
        return proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill_group(proc)
        raise FirewallError(
            f"{what} timed out after {timeout}s",
            failed=[(e, "timeout") for e in elements],
            applied=0,
        ) from exc


def kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill a timed-out command and everything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)
