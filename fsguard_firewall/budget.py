"""The ban budget: more than `security.max_bans_per_minute` automatic bans in one
minute is an alert (a counter, a gauge and a log line), never a reason to stop
banning: a real flood of attackers must still be blocked, and a forged-source
attack that turns the rules against customers must be seen at once."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

WINDOW = 60.0


class BanBudget:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = max(1, per_minute)
        self._clock = clock
        self._times: deque[float] = deque()
        self.exceeded = 0  # automatic bans beyond the budget (fsguard_ban_budget_exceeded_total)
        self._episode = False  # over budget since the last time under it

    def note(self, count: int = 1) -> None:
        """Record `count` automatic bans applied now."""
        now = self._clock()
        times = self._times
        for _ in range(count):
            times.append(now)
        cutoff = now - WINDOW
        while times and times[0] <= cutoff:
            times.popleft()
        over = len(times) - self.limit
        if over <= 0:
            self._episode = False
            return
        self.exceeded += min(over, count)
        if not self._episode:
            self._episode = True
            log.warning(
                "ban budget exceeded: %d automatic bans in the last minute "
                "(security.max_bans_per_minute %d); banning continues - check for a "
                "forged-source attack or a rule that misfires",
                len(times), self.limit,
            )  # fmt: skip
        # keep memory bounded under a flood: only the count past the limit matters
        while len(times) > self.limit * 2 + 1:
            times.popleft()

    def last_minute(self) -> int:
        cutoff = self._clock() - WINDOW
        times = self._times
        while times and times[0] <= cutoff:
            times.popleft()
        return len(times)

    def over(self) -> bool:
        return self.last_minute() > self.limit
