"""Config key tables (durations, ports, secrets, deprecated keys), dotted-key access, and
ConfigError, whose message names the key, the value and what a valid value looks like.
"""

from __future__ import annotations

from typing import Any

CONFIG_SEARCH_PATHS: tuple[str, ...] = ("./config.json", "/etc/fsguard/config.json")

DURATION_KEYS: frozenset[str] = frozenset(
    {
        "cache.security_ttl",
        "cache.cleanup_interval",
        "security.failed_attempts_window",
        "security.block_duration",
        "security.whitelist_ttl",
        "security.reconnect_backoff",
        "security.wrong_call_state_window",
        "security.chandaemon.report_timeout",
        "security.rate_limit.call_rate_interval",
        "security.rate_limit.registration_window",
        "security.rate_limit.block_duration",
        "security.rate_limit.cleanup_interval",
        "security.enumeration.window",
        "security.recidive.window",
        "security.recidive.max_duration",
        "security.crowdsec.poll_interval",
        "security.crowdsec.timeout",
        "security.gateway_refresh_interval",
        "security.extension_scan.window",
        "logging.audit_max_age",
        "security.drift_check_interval",
    }
)
# 0 = permanent / no limit
ZERO_OK_KEYS = frozenset({"security.recidive.max_duration", "logging.audit_max_age"})
PORT_KEYS: frozenset[str] = frozenset({"server.port", "security.esl_port"})
SECRET_FIELDS: frozenset[str] = frozenset(
    {"esl_password", "api_token", "password", "bouncer_api_key"}
)
DEPRECATED_KEYS: frozenset[str] = frozenset(
    {
        "server.log_responses",
        "server.pprof_enabled",
        "server.pprof_addr",
        "security.whitelist_enabled",
    }
)
LOG_LEVELS: tuple[str, ...] = ("error", "warning", "info", "debug", "trace")
LOG_FORMATS: tuple[str, ...] = ("auto", "json", "human")
MASK = "********"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key, the value and the fix.

    A ValueError, so callers that already catch ValueError on load report it cleanly.
    """

    expected: str = ""  # what a valid value looks like, when known


def show_value(key: str, value: object) -> str:
    """Value as quoted in error messages; secrets are masked, long values cut."""
    if key.rsplit(".", 1)[-1] in SECRET_FIELDS and value not in ("", None):
        return MASK
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def invalid_value(key: str, value: object, expected: str) -> ConfigError:
    err = ConfigError(
        f"config key {key}: invalid value {show_value(key, value)}: expected {expected}"
    )
    err.expected = expected
    return err


# ---- dotted-key helpers --------------------------------------------------


def get_key(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def set_key(obj: Any, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)
