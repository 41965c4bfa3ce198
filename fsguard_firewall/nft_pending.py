"""An `nft -f -` batch under way: its input written at once, so the caller commits its own
records while nft works; `wait()` finishes it through NftBackend's retry (nft_backend.py).
"""

from __future__ import annotations

import contextlib
import subprocess
from typing import TYPE_CHECKING

from . import nft_ruleset as nr
from .backend import Element, FirewallError
from .process_group import kill_group

if TYPE_CHECKING:
    from .nft_backend import NftBackend


class NftPending:
    """An `nft -f -` under way (see NftBackend.apply_async)."""

    def __init__(
        self,
        backend: NftBackend,
        items: list[tuple[Element, int | None]],
        proc: subprocess.Popen[str] | None,
        batch: nr.Batch | None = None,
    ) -> None:
        self._backend = backend
        self._items = items
        self._proc = proc
        if proc is not None and proc.stdin is not None and batch is not None:
            stdin, proc.stdin = proc.stdin, None  # communicate() must not touch it again
            with contextlib.suppress(BrokenPipeError):  # nft died: its stderr says why
                stdin.write(batch.text())
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    def wait(self) -> int:
        """Elements applied; FirewallError (with .failed/.applied) as `apply` raises."""
        proc = self._proc
        if proc is None:
            return len(self._items) if self._backend.dry_run else 0
        try:
            _, stderr = proc.communicate(timeout=self._backend.command_timeout)
        except subprocess.TimeoutExpired as exc:
            kill_group(proc)
            raise FirewallError(
                f"nft -f timed out after {self._backend.command_timeout}s",
                failed=[(str(e), "timeout") for e, _ in self._items],
                applied=0,
            ) from exc
        return self._backend._finish(self._items, (proc.returncode, stderr))
