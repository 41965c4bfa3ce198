"""Shared pytest setup: make `tests.*` helpers and the repo root importable either way."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
for path in (_TESTS.parent, _TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
