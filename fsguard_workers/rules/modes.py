"""`security.rules.<rule>.mode`: ban (the default), simulate or off (CrowdSec's
simulation mode). A simulated rule logs and records its decisions (the worker's
recent list behind GET /security/simulated, the audit stream, metrics with
simulated="true"), never reaches the firewall and never kills a call. An "off" rule
makes no decision and kills no call."""

from __future__ import annotations

from collections import OrderedDict, deque

from shared.config import RulesConfig
from shared.ops.worker import SimulatedDecision

BAN = "ban"
SIMULATE = "simulate"
OFF = "off"
RECENT = 256  # simulated decisions kept per worker for the API


class Modes:
    def __init__(self, cfg: RulesConfig) -> None:
        self._mode = {name: cfg.mode_of(name) for name in cfg.__struct_fields__}

    def __getitem__(self, rule: str) -> str:
        return self._mode.get(rule, BAN)

    def active(self, rule: str) -> bool:
        """The rule runs (ban or simulate)."""
        return self._mode.get(rule, BAN) != OFF

    def as_dict(self) -> dict[str, str]:
        return dict(self._mode)


class Simulations:
    """Simulated decisions: one per (source, rule) while its would-be ban lasts."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._until: OrderedDict[tuple[int, str], float] = OrderedDict()
        self.recent: deque[SimulatedDecision] = deque(maxlen=RECENT)
        self.by_rule: dict[str, int] = {}

    def active(self, key: int, rule: str, now: float) -> bool:
        until = self._until.get((key, rule))
        return until is not None and until > now

    def record(self, key: int, rule: str, until: float, decision: SimulatedDecision) -> None:
        self._until[(key, rule)] = until
        self._until.move_to_end((key, rule))
        if len(self._until) > self._cap:
            self._until.popitem(last=False)
        self.recent.append(decision)
        self.by_rule[rule] = self.by_rule.get(rule, 0) + 1
