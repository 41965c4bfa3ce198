"""What the rule mixins see of the engine (for the type checker only).

Each rule module defines a mixin of DetectionEngine holding the rule's event handler:
what the rule reads from the event, counts in the source's windows, and decides. At
run time `RuleBase` is `object` (a rule module does not import the engine: the engine
imports the rules); for mypy it declares the engine's attributes the rules use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import (
        EnumerationConfig,
        ExtensionScanConfig,
        RateLimitConfig,
        SecurityConfig,
    )

    from ..decisions import Decisions
    from .bare_ip import BareIpMatcher
    from .extension_scan import CauseMatcher
    from .matchers import ScannerMatcher, TollFraudMatcher, UntrustedMatcher

    class RuleBase(Decisions):
        """The engine's attributes and shared helpers the rules use."""

        _sec: SecurityConfig
        _rl: RateLimitConfig
        _enum: EnumerationConfig
        _ext: ExtensionScanConfig
        _default_domain: str
        _rate_on: bool
        _scanner: ScannerMatcher
        _scanner_not_ban: bool
        _untrusted: UntrustedMatcher
        _toll: TollFraudMatcher
        _bare: BareIpMatcher
        _bare_on: bool
        _ext_cause: CauseMatcher
        _ext_on: bool

else:
    RuleBase = object
