"""The one way a rule hands a finding to the engine's decision step (decisions.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from .events import Event, Kind


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """What one rule found against one source on one event (built only on a crossing)."""

    rule: str
    reason: str
    duration: float  # the rule's base duration (recidive may lengthen it)
    key: int  # the source (keys.py)
    now: float  # monotonic time of the event
    read_ts: float  # when the supervisor read the event
    ev: Event
    kind: Kind
    ua: str = ""
    user: str = ""
    count: int = 1
    details: dict[str, Any] | None = None  # rule-specific evidence (users, window, ...)
