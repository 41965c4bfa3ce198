"""Environment overrides: the Go program's variable names, applied after the file.

Unlike Go, an invalid value is an error (a bool that is not a known word is read as
false, as in Go, with a warning).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from shared.config_keys import (
    DEPRECATED_KEYS,
    MASK,
    SECRET_FIELDS,
    ZERO_OK_KEYS,
    ConfigError,
    invalid_value,
    set_key,
)
from shared.config_schema import Config
from shared.config_values import parse_duration, parse_port

_log = logging.getLogger("shared.config")  # the name operators and tests filter on

# Environment overrides: exactly the Go program's variable names (facts 6.2).
ENV_OVERRIDES: tuple[tuple[str, str, str], ...] = (
    ("SERVER_HOST", "server.host", "str"),
    ("SERVER_PORT", "server.port", "port"),
    ("SERVER_LOG_REQUESTS", "server.log_requests", "bool"),
    ("SERVER_LOG_RESPONSES", "server.log_responses", "bool"),
    ("SERVER_PPROF_ENABLED", "server.pprof_enabled", "bool"),
    ("SERVER_PPROF_ADDR", "server.pprof_addr", "str"),
    ("FS_DEFAULT_DOMAIN", "freeswitch.default_domain", "str"),
    ("CACHE_ENABLED", "cache.enabled", "bool"),
    ("CACHE_SECURITY_TTL", "cache.security_ttl", "duration"),
    ("CACHE_CLEANUP_INTERVAL", "cache.cleanup_interval", "duration"),
    ("SECURITY_ENABLED", "security.enabled", "bool"),
    ("SECURITY_ESL_HOST", "security.esl_host", "str"),
    ("SECURITY_ESL_PORT", "security.esl_port", "port"),
    ("SECURITY_ESL_PASSWORD", "security.esl_password", "str"),
    ("SECURITY_ESL_ALLOWED_COMMANDS", "security.esl_allowed_commands", "list"),
    ("SECURITY_MAX_FAILED_ATTEMPTS", "security.max_failed_attempts", "int"),
    ("SECURITY_FAILED_WINDOW", "security.failed_attempts_window", "duration"),
    ("SECURITY_AUTO_BLOCK", "security.auto_block_enabled", "bool"),
    ("SECURITY_BLOCK_DURATION", "security.block_duration", "duration"),
    ("SECURITY_WHITELIST_ENABLED", "security.whitelist_enabled", "bool"),
    ("SECURITY_WHITELIST_TTL", "security.whitelist_ttl", "duration"),
    ("SECURITY_TRUSTED_NETWORKS", "security.trusted_networks", "list"),
    ("SECURITY_UNTRUSTED_NETWORKS", "security.untrusted_networks", "list"),
    ("SECURITY_IPTABLES_CHAIN", "security.iptables_chain", "str"),
    ("SECURITY_IPSET_NAME", "security.ipset_name", "str"),
    ("SECURITY_DRY_RUN", "security.dry_run", "bool"),
    ("SECURITY_AUTO_WHITELIST_ON_SUCCESS", "security.auto_whitelist_on_success", "bool"),
    ("SECURITY_ESL_LOG_LEVEL", "security.esl_log_level", "str"),
    ("SECURITY_RECONNECT_BACKOFF", "security.reconnect_backoff", "duration"),
    ("SECURITY_MAX_WRONG_CALL_STATES", "security.max_wrong_call_states", "int"),
    ("SECURITY_WRONG_CALL_STATE_WINDOW", "security.wrong_call_state_window", "duration"),
    ("SECURITY_CHANDAEMON_ENABLED", "security.chandaemon.enabled", "bool"),
    ("SECURITY_CHANDAEMON_REPORT_URL", "security.chandaemon.report_url", "str"),
    ("SECURITY_CHANDAEMON_BLOCKER_URL", "security.chandaemon.blocker_url", "str"),
    ("SECURITY_CHANDAEMON_SERVICE_NAME", "security.chandaemon.service_name", "str"),
    ("SECURITY_CHANDAEMON_REPORT_TIMEOUT", "security.chandaemon.report_timeout", "duration"),
    ("SECURITY_CHANDAEMON_ALLOWED_API_IPS", "security.chandaemon.allowed_api_ips", "list"),
    ("SECURITY_RATE_LIMIT_ENABLED", "security.rate_limit.enabled", "bool"),
    ("SECURITY_RATE_LIMIT_CALL_LIMIT", "security.rate_limit.call_rate_limit", "int"),
    ("SECURITY_RATE_LIMIT_CALL_INTERVAL", "security.rate_limit.call_rate_interval", "duration"),
    ("SECURITY_RATE_LIMIT_REG_LIMIT", "security.rate_limit.registration_limit", "int"),
    ("SECURITY_RATE_LIMIT_REG_WINDOW", "security.rate_limit.registration_window", "duration"),
    ("SECURITY_RATE_LIMIT_AUTO_BLOCK", "security.rate_limit.auto_block_on_exceed", "bool"),
    ("SECURITY_RATE_LIMIT_BLOCK_DURATION", "security.rate_limit.block_duration", "duration"),
    ("SECURITY_RATE_LIMIT_WHITELIST_BYPASS", "security.rate_limit.whitelist_bypass", "bool"),
    ("SECURITY_RATE_LIMIT_CLEANUP_INTERVAL", "security.rate_limit.cleanup_interval", "duration"),
)
# fsguard's own overrides (not in the Go program), same rules.
FSGUARD_ENV_OVERRIDES: tuple[tuple[str, str, str], ...] = (
    ("SECURITY_CROWDSEC_ENABLED", "security.crowdsec.enabled", "bool"),
    ("SECURITY_CROWDSEC_LAPI_URL", "security.crowdsec.lapi_url", "str"),
    ("SECURITY_CROWDSEC_MACHINE_ID", "security.crowdsec.machine_id", "str"),
    ("SECURITY_CROWDSEC_PASSWORD", "security.crowdsec.password", "str"),
    ("SECURITY_CROWDSEC_BOUNCER_API_KEY", "security.crowdsec.bouncer_api_key", "str"),
    ("SECURITY_CROWDSEC_POLL_INTERVAL", "security.crowdsec.poll_interval", "duration"),
    ("SECURITY_CROWDSEC_ORIGINS", "security.crowdsec.origins", "list"),
    ("SECURITY_CROWDSEC_SCENARIOS_CONTAINING", "security.crowdsec.scenarios_containing", "list"),
    (
        "SECURITY_CROWDSEC_SCENARIOS_NOT_CONTAINING",
        "security.crowdsec.scenarios_not_containing",
        "list",
    ),
    ("SECURITY_CROWDSEC_PUSH_SIMULATED", "security.crowdsec.push_simulated", "bool"),
    ("SECURITY_CROWDSEC_TIMEOUT", "security.crowdsec.timeout", "duration"),
    ("SECURITY_FIREWALL_BACKEND", "security.firewall_backend", "str"),
    ("SECURITY_NFTABLES_TABLE", "security.nftables_table", "str"),
    ("SECURITY_REMOVE_RULES_ON_STOP", "security.remove_rules_on_stop", "bool"),
)


_FALSE_WORDS = frozenset({"false", "0", "no", "off"})
_INT_RE = re.compile(r"[+-]?\d+")


def _parse_env(var: str, key: str, kind: str, text: str) -> Any:
    def bad(expected: str) -> ConfigError:
        shown = MASK if key.rsplit(".", 1)[-1] in SECRET_FIELDS else repr(text)
        return ConfigError(
            f"environment variable {var} (config key {key}): invalid value {shown}: "
            f"expected {expected}"
        )

    if kind == "str":
        return text
    if kind == "bool":
        low = text.lower()
        if low not in ("true", "1", "yes") and low not in _FALSE_WORDS:
            _log.warning("environment variable %s=%r is read as false (Go semantics)", var, text)
        return low in ("true", "1", "yes")
    if kind == "int":
        if not _INT_RE.fullmatch(text):
            raise bad("an integer")
        return int(text)
    try:
        if kind == "duration":
            seconds = parse_duration(text, key)
            if seconds == 0 and key not in ZERO_OK_KEYS:
                raise invalid_value(key, text, "a duration greater than 0")
            return seconds
        if kind == "port":
            return parse_port(text, key)
    except ConfigError as exc:
        raise bad(exc.expected) from exc
    # kind == "list"
    try:
        items = json.loads(text)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise bad('a JSON array of strings such as ["a","b"]')
    return items


def apply_env(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    """Apply Go-named overrides; returns {dotted key: variable} for error messages."""
    origins: dict[str, str] = {}
    for var, key, kind in ENV_OVERRIDES + FSGUARD_ENV_OVERRIDES:
        text = env.get(var, "")
        if text == "":
            continue  # Go: an empty variable counts as unset
        set_key(config, key, _parse_env(var, key, kind, text))
        origins[key] = var
        if key in DEPRECATED_KEYS:
            _log.warning(
                "config key %s (environment variable %s) is deprecated and ignored", key, var
            )
    return origins
