"""The detection engine on fake clocks, collecting its decisions: what the engine tests
drive (see tests/sofia_events.py for the events they feed it)."""

from __future__ import annotations

from typing import Any

from fsguard_workers.engine import DetectionEngine
from shared.config import Config
from shared.messages import BanDecision, KillCall

ATTACKER = "198.51.100.7"
OTHER = "198.51.100.8"


def cfg(**security: Any) -> Config:
    """The default config with these `security` settings changed."""
    config = Config()
    for name, value in security.items():
        setattr(config.security, name, value)
    return config


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Harness:
    """An engine on a fake clock that collects its outputs."""

    def __init__(self, config: Config | None = None, **engine_kw: Any) -> None:
        self.config = config or Config()
        self.clock = Clock()
        self.wall = Clock(1_750_000_000.0)
        self.engine = DetectionEngine(
            self.config, clock=self.clock, wallclock=self.wall, **engine_kw
        )
        self.bans: list[BanDecision] = []
        self.kills: list[KillCall] = []

    def feed(self, body: bytes, advance: float = 0.0) -> list[BanDecision]:
        """Handle one body (after moving the clocks); return the new decisions."""
        self.clock.advance(advance)
        self.wall.advance(advance)
        self.engine.handle(body, self.wall.now)
        new = []
        for out in self.engine.drain():
            if isinstance(out, BanDecision):
                new.append(out)
                self.bans.append(out)
            else:
                self.kills.append(out)
        return new

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.wall.advance(seconds)
