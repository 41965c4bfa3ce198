"""fsguard's detection rules: names, reasons, matchers, and one module per newer rule.

- reasons.py: rule names (BanDecision.rule) and reason strings;
- matchers.py: scanner User-Agents, untrusted domains/networks, toll-fraud destinations;
- extension_scan.py, bare_ip.py: the issue-12 detections;
- protection.py: protected sources and spoofable events;
- modes.py: `security.rules.<rule>.mode` (ban / simulate / off);
- catalog.py: what each rule reads, counts and bans for (docs/rules.md is generated from it).

The per-source state and the event flow are in fsguard_workers.engine.
"""

from __future__ import annotations

from .bare_ip import BARE_IP, BareIpMatcher, reason_bare_ip
from .extension_scan import EXTENSION_SCAN, CauseMatcher, reason_extension_scan
from .matchers import (
    ScannerMatcher,
    TollFraudMatcher,
    UntrustedMatcher,
    normalize_domain,
)
from .reasons import (
    CALL_RATE,
    ENUMERATION,
    FAILED_AUTH,
    REGISTRATION_RATE,
    SCANNER_UA,
    TOLL_FRAUD,
    UNTRUSTED_DOMAIN,
    UNTRUSTED_NETWORK,
    WRONG_CALL_STATE,
    reason_call_untrusted,
    reason_enumeration,
    reason_failed,
    reason_failed_untrusted,
    reason_rate,
    reason_scanner,
    reason_toll_fraud,
    reason_untrusted_network,
    reason_wrong_call_state,
)

__all__ = [
    "BARE_IP",
    "CALL_RATE",
    "ENUMERATION",
    "EXTENSION_SCAN",
    "FAILED_AUTH",
    "REGISTRATION_RATE",
    "SCANNER_UA",
    "TOLL_FRAUD",
    "UNTRUSTED_DOMAIN",
    "UNTRUSTED_NETWORK",
    "WRONG_CALL_STATE",
    "BareIpMatcher",
    "CauseMatcher",
    "ScannerMatcher",
    "TollFraudMatcher",
    "UntrustedMatcher",
    "normalize_domain",
    "reason_bare_ip",
    "reason_call_untrusted",
    "reason_enumeration",
    "reason_extension_scan",
    "reason_failed",
    "reason_failed_untrusted",
    "reason_rate",
    "reason_scanner",
    "reason_toll_fraud",
    "reason_untrusted_network",
    "reason_wrong_call_state",
]
