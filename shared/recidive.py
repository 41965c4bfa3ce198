"""Repeat offenders: how long the next ban of an address lasts.

One definition for both owners of ban history: the worker's engine (per shard, in memory)
and the firewall (durable, in SQLite), which escalates a rule's decision when its own
history knows of earlier bans the worker forgot (after a worker restart).
"""

from __future__ import annotations

from shared.config import RecidiveConfig


def recidive_duration(base: float, prior_bans: int, cfg: RecidiveConfig) -> float:
    """Ban duration for a key banned `prior_bans` times within the recidive window.

    0 means permanent. A permanent base stays permanent. The multiplied value is
    capped at max_duration; max_duration 0 (permanent) means no cap.
    """
    if base <= 0:
        return 0.0
    if not cfg.enabled or prior_bans <= 0 or cfg.factor <= 1:
        return base
    duration = base * cfg.factor ** min(prior_bans, 64)
    if cfg.max_duration > 0:
        duration = min(duration, max(cfg.max_duration, base))
    return duration
