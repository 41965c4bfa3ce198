"""An `nft -f -` batch under way: its input written at once, so the caller commits its own
records while nft works; `wait()` finishes it through NftBackend's retry (nft_backend.py).
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from . import nft_ruleset as nr
from . import process_group as tool
from .backend import Element

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
        if proc is not None and batch is not None:
            tool.feed(proc, batch.text())

    def wait(self) -> int:
        """Elements applied; FirewallError (with .failed/.applied) as `apply` raises."""
        proc = self._proc
        if proc is None:
            return len(self._items) if self._backend.dry_run else 0
        _, stderr = tool.finish(
            proc, self._backend.command_timeout, "nft -f",
            elements=(str(e) for e, _ in self._items),
        )  # fmt: skip
        return self._backend._finish(self._items, (proc.returncode, stderr))
