"""The stop flag of a child process's main loop: SIGTERM and SIGINT set it.

The loop reads `stop.requested` at each turn and ends cleanly (sockets closed, state
flushed); the supervisor sends SIGTERM in its stop order, Ctrl-C sends SIGINT.
"""

from __future__ import annotations

import signal
from types import FrameType


class StopFlag:
    """Installs the SIGTERM/SIGINT handlers; `requested` turns True on either."""

    def __init__(self, *, install: bool = True) -> None:
        self.requested = False
        if install:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    @classmethod
    def unarmed(cls) -> StopFlag:
        """A flag no signal sets (an object used in-process, e.g. by tests)."""
        return cls(install=False)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
