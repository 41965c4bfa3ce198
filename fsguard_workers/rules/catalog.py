"""What each rule reads, counts and bans for: the source of docs/rules.md
(`python -m fsguard_workers.rules.doc > docs/rules.md`; tests/test_rules_doc.py keeps
the page in step with this catalog, the config defaults and the reason functions)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from shared.config import Config

from . import bare_ip, extension_scan, reasons

SPOOFABLE_NOTE = (
    "A protected source is never banned by it when the deciding event is spoofable "
    "(a challenge, an unauthenticated call, an abandoned INVITE): the call is still "
    "killed and the event is counted as suspected spoofing."
)


class RuleSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # BanDecision.rule and the key under security.rules
    title: str
    events: tuple[str, ...]  # ESL events read
    counts: str  # what one unit of evidence is, and the threshold
    keys: tuple[str, ...]  # config keys (dotted) besides security.rules.<name>.mode
    duration_key: str  # the ban duration's key (before recidive escalation)
    reason: Callable[[Config], str]  # the reason string at the config's thresholds
    kills: str = ""  # the kill reason when it tears down the call
    notes: str = ""


RULES: tuple[RuleSpec, ...] = (
    RuleSpec(
        name=reasons.FAILED_AUTH,
        title="Failed authentication",
        events=("sofia::register_failure", "sofia::register_attempt (auth-result FORBIDDEN)"),
        counts=(
            "one per sofia::register_failure (a 403 after a digest answer, REGISTER or "
            "INVITE); the FORBIDDEN register_attempt before it only names the account. "
            "Bans when max_failed_attempts failures fall within failed_attempts_window "
            "(a sliding window). A source learned from a successful registration is not "
            "banned while a single user fails (one misconfigured phone behind NAT)."
        ),
        keys=("security.max_failed_attempts", "security.failed_attempts_window"),
        duration_key="security.block_duration",
        reason=lambda c: reasons.reason_failed(c.security.max_failed_attempts),
    ),
    RuleSpec(
        name=reasons.ENUMERATION,
        title="User enumeration",
        events=("sofia::register_failure",),
        counts=(
            "distinct accounts among the source's failures within enumeration.window; "
            "bans at enumeration.max_distinct_users."
        ),
        keys=(
            "security.enumeration.enabled",
            "security.enumeration.max_distinct_users",
            "security.enumeration.window",
        ),
        duration_key="security.block_duration",
        reason=lambda c: reasons.reason_enumeration(
            c.security.enumeration.max_distinct_users, c.security.enumeration.window
        ),
    ),
    RuleSpec(
        name=reasons.REGISTRATION_RATE,
        title="Registration rate",
        events=("sofia::pre_register", "sofia::register_attempt"),
        counts=(
            "registrations, as in the Go program's registration_limit: one REGISTER "
            "exchange is one, whether it succeeds or fails. The challenge (pre_register) "
            "counts; the register_attempt that answers it does not; an attempt with no "
            "challenge outstanding (a reused nonce) counts; a challenge never answered "
            "still counts once. ESL does not say whether a challenge was for a REGISTER or "
            "an INVITE, so challenged INVITEs count too. Bans when more than "
            "registration_limit fall within registration_window. Whitelisted and "
            "protected sources bypass it when whitelist_bypass is on."
        ),
        keys=(
            "security.rate_limit.enabled",
            "security.rate_limit.registration_limit",
            "security.rate_limit.registration_window",
            "security.rate_limit.auto_block_on_exceed",
            "security.rate_limit.whitelist_bypass",
        ),
        duration_key="security.rate_limit.block_duration",
        reason=lambda c: reasons.reason_rate(
            "registration",
            c.security.rate_limit.registration_limit + 1,
            c.security.rate_limit.registration_window,
        ),
        notes=SPOOFABLE_NOTE,
    ),
    RuleSpec(
        name=reasons.CALL_RATE,
        title="Call rate",
        events=("CHANNEL_CREATE",),
        counts=(
            "calls (CHANNEL_CREATE) within call_rate_interval; every call over "
            "call_rate_limit is killed, the first one over it also bans."
        ),
        keys=(
            "security.rate_limit.enabled",
            "security.rate_limit.call_rate_limit",
            "security.rate_limit.call_rate_interval",
            "security.rate_limit.auto_block_on_exceed",
            "security.rate_limit.whitelist_bypass",
        ),
        duration_key="security.rate_limit.block_duration",
        reason=lambda c: reasons.reason_rate(
            "call",
            c.security.rate_limit.call_rate_limit + 1,
            c.security.rate_limit.call_rate_interval,
        ),
        kills="rate-limited",
        notes=SPOOFABLE_NOTE,
    ),
    RuleSpec(
        name=reasons.WRONG_CALL_STATE,
        title="Wrong call state",
        events=("sofia::wrong_call_state",),
        counts=(
            "one per sofia::wrong_call_state (a challenged INVITE abandoned and reaped "
            "~10 s later); bans at max_wrong_call_states within wrong_call_state_window."
        ),
        keys=("security.max_wrong_call_states", "security.wrong_call_state_window"),
        duration_key="security.block_duration",
        reason=lambda c: reasons.reason_wrong_call_state(c.security.max_wrong_call_states),
        notes=SPOOFABLE_NOTE,
    ),
    RuleSpec(
        name=reasons.UNTRUSTED_DOMAIN,
        title="Untrusted domain",
        events=("sofia::register_failure", "CHANNEL_CREATE"),
        counts=(
            "a single event whose SIP domain (register_failure to-host, CHANNEL_CREATE "
            "variable_sip_from_host) matches a domain entry of untrusted_networks "
            "(exact, or *.suffix)."
        ),
        keys=("security.untrusted_networks",),
        duration_key="security.block_duration",
        reason=lambda c: reasons.reason_call_untrusted("evil.example"),
        kills="untrusted-domain",
        notes=SPOOFABLE_NOTE
        + ' On a register_failure the reason is "'
        + reasons.reason_failed_untrusted("evil.example")
        + '".',
    ),
    RuleSpec(
        name=reasons.UNTRUSTED_NETWORK,
        title="Untrusted network",
        events=(
            "sofia::pre_register",
            "sofia::register_attempt",
            "sofia::register",
            "sofia::register_failure",
            "sofia::wrong_call_state",
            "CHANNEL_CREATE",
        ),
        counts="a single event whose source address is in a CIDR entry of untrusted_networks.",
        keys=("security.untrusted_networks",),
        duration_key="security.block_duration",
        reason=lambda c: reasons.reason_untrusted_network("203.0.113.0/24"),
        kills="untrusted-network",
        notes=SPOOFABLE_NOTE,
    ),
    RuleSpec(
        name=reasons.SCANNER_UA,
        title="Scanner User-Agent",
        events=(
            "sofia::pre_register",
            "sofia::register_attempt",
            "sofia::register",
            "sofia::register_failure",
            "CHANNEL_CREATE",
        ),
        counts=(
            "a single event whose User-Agent contains a scanner_user_agents token "
            "(whole token, case-insensitive). A successful registration by a scanner "
            "(a cracked password) bans and is never whitelisted nor protected."
        ),
        keys=("security.scanner_user_agents",),
        duration_key="security.block_duration",
        reason=lambda c: reasons.reason_scanner("friendly-scanner"),
        kills="scanner",
        notes=SPOOFABLE_NOTE,
    ),
    RuleSpec(
        name=reasons.TOLL_FRAUD,
        title="Toll-fraud probe",
        events=("CHANNEL_CREATE",),
        counts=(
            "a single unauthenticated call on a watched profile or context to a "
            "destination starting with a denied prefix."
        ),
        keys=(
            "security.toll_fraud.enabled",
            "security.toll_fraud.watch_profiles",
            "security.toll_fraud.watch_contexts",
            "security.toll_fraud.deny_prefixes",
        ),
        duration_key="security.block_duration",
        reason=lambda c: reasons.reason_toll_fraud("011972599999999", "external", "public"),
        kills="toll-fraud",
        notes=SPOOFABLE_NOTE,
    ),
    RuleSpec(
        name=extension_scan.EXTENSION_SCAN,
        title="Extension scanning",
        events=("CHANNEL_HANGUP_COMPLETE",),
        counts=(
            "calls from the source whose sofia leg (with variable_sip_network_ip) ends "
            "with one of hangup_causes; bans at max_failed_calls within window."
        ),
        keys=(
            "security.extension_scan.max_failed_calls",
            "security.extension_scan.window",
            "security.extension_scan.hangup_causes",
        ),
        duration_key="security.block_duration",
        reason=lambda c: extension_scan.reason_extension_scan(
            c.security.extension_scan.max_failed_calls, c.security.extension_scan.window
        ),
        notes=SPOOFABLE_NOTE,
    ),
    RuleSpec(
        name=bare_ip.BARE_IP,
        title="Request to the bare IP",
        events=(
            "sofia::pre_register",
            "sofia::register_attempt",
            "sofia::register_failure",
            "CHANNEL_CREATE",
        ),
        counts=(
            "a single request whose To / Request-URI host is an IP literal not in "
            "bare_ip.allowed_hosts (pre_register/register_attempt from-host, "
            "register_failure to-host, CHANNEL_CREATE variable_sip_req_host). Off by "
            "default: phones set up with the server's address as their domain trip it."
        ),
        keys=("security.bare_ip.allowed_hosts",),
        duration_key="security.block_duration",
        reason=lambda c: bare_ip.reason_bare_ip("192.0.2.10"),
        kills="bare-ip",
        notes=SPOOFABLE_NOTE,
    ),
)
