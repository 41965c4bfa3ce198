"""Rule names (BanDecision.rule) and the ban reason strings (the Go program's where it had one)."""

from __future__ import annotations

from shared.durations import go_duration

# Rule names carried in BanDecision.rule.
FAILED_AUTH = "failed_auth"
ENUMERATION = "user_enumeration"
REGISTRATION_RATE = "registration_rate"
CALL_RATE = "call_rate"
WRONG_CALL_STATE = "wrong_call_state"
UNTRUSTED_DOMAIN = "untrusted_domain"
UNTRUSTED_NETWORK = "untrusted_network"
SCANNER_UA = "scanner_user_agent"
TOLL_FRAUD = "toll_fraud"


def reason_failed(limit: int) -> str:
    return f"Exceeded max failed registrations ({limit})"


def reason_wrong_call_state(limit: int) -> str:
    return f"Exceeded max wrong call states ({limit})"


def reason_failed_untrusted(domain: str) -> str:
    return f'Failed registration from untrusted domain "{domain}"'


def reason_call_untrusted(domain: str) -> str:
    return f'Call from untrusted domain "{domain}"'


def reason_rate(kind: str, count: int, window: float) -> str:
    """kind is "call" or "registration"."""
    return f"{kind} rate limit exceeded ({count} in {go_duration(window)})"


def reason_enumeration(users: int, window: float) -> str:
    return f"User enumeration: {users} distinct users failed in {go_duration(window)}"


def reason_untrusted_network(network: str) -> str:
    return f'Source address in untrusted network "{network}"'


def reason_scanner(user_agent: str) -> str:
    return f'Scanner User-Agent "{clip(user_agent)}"'


def reason_toll_fraud(destination: str, profile: str, context: str) -> str:
    return (
        f'Unauthenticated call to "{clip(destination)}" (profile "{profile}", context "{context}")'
    )


def clip(value: str, limit: int = 128) -> str:
    """Attacker strings end up in reasons: keep them short and printable."""
    value = value[:limit]
    return "".join(ch if ch.isprintable() else "?" for ch in value)
