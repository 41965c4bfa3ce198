"""scanner_user_agent: the User-Agent is a known scanner's (`security.scanner_user_agents`,
matched as whole tokens by matchers.ScannerMatcher). Bans on the first event of any kind
(instant.py); a scanner that cracks a password is never protected nor whitelisted."""

from __future__ import annotations

from ..events import Event, Kind, user_of
from ..evidence import Evidence
from .base import RuleBase
from .reasons import SCANNER_UA, reason_scanner


class ScannerUa(RuleBase):
    """Mixin of DetectionEngine: the scanner_user_agent rule."""

    def _scanner_ua(
        self, kind: Kind, ev: Event, ua: str, key: int, now: float, read_ts: float
    ) -> bool:
        pattern = self._scanner.match(ua)
        return bool(pattern) and self._decide(Evidence(
            rule=SCANNER_UA, reason=reason_scanner(ua),
            duration=self._sec.block_duration, key=key, now=now, read_ts=read_ts,
            ev=ev, kind=kind, ua=ua, user=user_of(kind, ev), details={"pattern": pattern},
        ))  # fmt: skip
