"""fsguard's detection rules: names, reasons, matchers, and one module per event a rule reads.

- reasons.py: rule names (BanDecision.rule) and reason strings;
- matchers.py: scanner User-Agents, untrusted domains/networks, toll-fraud destinations;
- one module per rule (a mixin of fsguard_workers.engine.DetectionEngine with one method:
  what the rule counts in the source's windows and whether it decides, like fail2ban's
  filters): untrusted_network.py, scanner_ua.py, bare_ip.py, toll_fraud.py,
  untrusted_domain.py, call_rate.py, enumeration.py, failed_auth.py, registration_rate.py,
  wrong_call_state.py, extension_scan.py;
- one module per event (like fail2ban's jails: which rules run on it, in what order):
  instant.py (the single-event rules, run on every event), channel_create.py,
  register_failure.py, registration_rate.py (pre_register / register_attempt),
  registered.py (sofia::register: protection, learned whitelist), wrong_call_state.py,
  extension_scan.py (CHANNEL_HANGUP_COMPLETE);
- every rule builds its decision one way: an `Evidence` given to `_decide`
  (fsguard_workers/decisions.py, like fail2ban's actions: simulate, budget, ban, kill);
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
