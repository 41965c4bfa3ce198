"""`ipset restore` for a batch of add/del lines: started at once (PendingApply), finished
with a retry past a line ipset rejects, and FirewallError naming exactly the elements
that did not reach the kernel. Commands run in their own session, killed whole on timeout.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import process_group as tool
from .backend import Element, FirewallError

if TYPE_CHECKING:
    from .kernel import KernelFirewall

_ERROR_LINE_RE = re.compile(r"Error in line (\d+)")
_FULL_RE = re.compile(r"is full|cannot add more elements")


@dataclass
class IpsetLine:
    """One `ipset restore` line and the element (and set) it is about."""

    text: str
    element: str
    set_name: str
    # the same line for the netlink path (op "add"/"del", parsed element, timeout)
    op: str = ""
    elem: Element | None = None
    timeout: int | None = None


def restore(
    run: Callable[..., subprocess.CompletedProcess[str]],
    lines: list[IpsetLine],
    first: tuple[int, str] | None = None,
) -> int:
    """Run (or, given `first` = (returncode, stderr) of a run already made, finish)
    `ipset restore` over `lines`, retrying past a rejected line."""
    failed: list[tuple[str, str]] = []
    applied = 0
    pending = lines
    attempts = 0
    while pending:
        attempts += 1
        if first is not None:
            returncode, stderr = first
            first = None
        else:
            proc = run(
                ["ipset", "restore", "-exist"],
                stdin="\n".join(line.text for line in pending) + "\n",
                check=False,
            )
            returncode, stderr = proc.returncode, proc.stderr
        if returncode == 0:
            applied += len(pending)
            break
        err = stderr.strip()
        match = _ERROR_LINE_RE.search(err)
        if match is None or attempts >= 3:
            failed.extend((line.element, err) for line in pending)
            break
        # 1-based. Whether the lines before it were applied depends on the error: a
        # kernel refusal (set full) comes after they were; a line ipset refuses while
        # parsing (no such set) aborts the whole batch. So they are sent again, with the
        # lines after it (-exist makes that idempotent), and only a success counts.
        bad = max(1, min(int(match.group(1)), len(pending)))
        failed.append((pending[bad - 1].element, err))
        pending = pending[: bad - 1] + pending[bad:]
    if failed:
        raise FirewallError(
            f"ipset restore: {len(failed)} of {len(lines)} lines failed: {failed[0][1]}",
            failed=failed,
            applied=applied,
            full=any(_FULL_RE.search(err) for _, err in failed),
        )
    return applied


class PendingApply:
    """An `ipset restore` under way (see KernelFirewall.apply_async)."""

    def __init__(
        self,
        kernel: KernelFirewall,
        lines: list[IpsetLine],
        proc: subprocess.Popen[str] | None,
        *,
        dry: bool = False,
        applied: int = 0,
    ) -> None:
        self._kernel = kernel
        self._lines = lines
        self._proc = proc
        self._dry = dry
        self._applied = applied  # lines already applied over netlink
        if proc is not None:  # fed now, so ipset works while the caller commits
            tool.feed(proc, "\n".join(line.text for line in lines) + "\n")

    @property
    def running(self) -> bool:
        """True while an `ipset restore` still works (False: all done over netlink)."""
        return self._proc is not None

    def wait(self) -> int:
        """Lines applied; FirewallError (with .failed/.applied) as `apply` raises."""
        proc = self._proc
        if proc is None:
            return len(self._lines) if self._dry else self._applied
        _, stderr = tool.finish(
            proc, self._kernel.command_timeout, "ipset restore",
            elements=(line.element for line in self._lines),
        )  # fmt: skip
        try:
            return self._applied + restore(
                self._kernel._run, self._lines, first=(proc.returncode, stderr)
            )
        except FirewallError as exc:
            exc.applied += self._applied
            raise
