"""Matchers built from the config: scanner User-Agents, untrusted domains and
networks, toll-fraud destinations. Stateless; the engine keeps the per-source state.

The untrusted-networks matcher is in shared/untrusted.py: the firewall builds it too
(its `untrusted` list op), and no role imports another role's package."""

from __future__ import annotations

import re
from collections.abc import Iterable

from shared.config import TollFraudConfig
from shared.untrusted import UntrustedMatcher, normalize_domain

from ..windows import BoundedCache

__all__ = ["ScannerMatcher", "TollFraudMatcher", "UntrustedMatcher", "normalize_domain"]

# --- matchers -----------------------------------------------------------------------


class ScannerMatcher:
    """Case-insensitive match of whole tokens of known scanner User-Agents.

    A pattern matches when it is not glued to a letter or digit on its left nor
    to a letter on its right: "sipcli" matches "sipcli/v1.8", "smap" does not
    match "Bsmapx", "iwar" does not match "Kiwari". Verdicts are memoised per
    User-Agent string (bounded), since a handful of UAs make most traffic.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        words = sorted({p.strip().lower() for p in patterns if p.strip()}, key=len, reverse=True)
        self._regex = (
            re.compile(
                r"(?<![a-z0-9])(?:" + "|".join(re.escape(w) for w in words) + r")(?![a-z])",
                re.IGNORECASE,
            )
            if words
            else None
        )
        self._cache: BoundedCache[str, str] = BoundedCache(4096)

    def match(self, user_agent: str) -> str:
        """The matched pattern (lower case), or "" when the UA is not a scanner."""
        if self._regex is None or not user_agent:
            return ""
        verdict = self._cache.get(user_agent)
        if verdict is None:
            found = self._regex.search(user_agent)
            verdict = found.group(0).lower() if found else ""
            self._cache.put(user_agent, verdict)
        return verdict


class TollFraudMatcher:
    """Unauthenticated calls on watched profiles/contexts to denied prefixes."""

    def __init__(self, cfg: TollFraudConfig) -> None:
        self.enabled = cfg.enabled and bool(cfg.deny_prefixes)
        self._profiles = frozenset(p.lower() for p in cfg.watch_profiles)
        self._contexts = frozenset(c.lower() for c in cfg.watch_contexts)
        self._prefixes = tuple(p for p in cfg.deny_prefixes if p)

    def match(self, profile: str, context: str, destination: str, authorized: str) -> bool:
        if not self.enabled or authorized.lower() == "true":
            return False
        if profile.lower() not in self._profiles and context.lower() not in self._contexts:
            return False
        return destination.strip().startswith(self._prefixes)


