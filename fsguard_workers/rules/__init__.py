"""fsguard's detection rules: names, reasons, matchers, and one module per event a rule reads.

- reasons.py: rule names (BanDecision.rule) and reason strings;
- matchers.py: scanner User-Agents, untrusted domains/networks, toll-fraud destinations;
- the rules (mixins of fsguard_workers.engine.DetectionEngine: what each reads from the
  event, counts in the source's windows and decides):
  - instant.py: untrusted_network, scanner_ua, bare_ip (single event, every event);
  - registration_rate.py: sofia::pre_register / register_attempt;
  - registered.py: sofia::register (protection, learned whitelist);
  - failed_auth.py: sofia::register_failure (untrusted_domain, enumeration, failed_auth);
  - wrong_call_state.py: sofia::wrong_call_state;
  - calls.py: CHANNEL_CREATE (toll_fraud, untrusted_domain, call_rate);
  - extension_scan.py, bare_ip.py: the issue-12 detections;
- base.py: what the rule mixins see of the engine (type checking only);
- protection.py: protected sources and spoofable events;
- modes.py: `security.rules.<rule>.mode` (ban / simulate / off);
- catalog.py: what each rule reads, counts and bans for (docs/rules.md is generated from it).

The event dispatch, per-source state and output are in fsguard_workers.engine,
tracking.py and decisions.py.
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
