"""fsguard configuration: one msgspec schema for the whole file.

The JSON keys are the Go program's (freeswitch-security) plus fsguard's own.
Attribute names equal JSON keys. Durations are written as strings such as
"5m", "1h", "250ms" (or plain numbers of seconds) and are exposed as float
seconds. Ports accept "8088" or 8088 and are exposed as int.

The loader (below the schema): find_config_path → load_config: JSON → durations
and ports normalised → schema (unknown keys are errors) → the Go program's
environment overrides (invalid values are errors, unlike Go) → validation.
Unlike the Go program it never writes a default config file.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect
import msgspec.structs

from shared.durations import format_duration
from shared.protected import pattern_problem

DEFAULT_TRUSTED_NETWORKS = [
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
]  # fmt: skip

DEFAULT_SCANNER_USER_AGENTS = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "VaxSIPUserAgent",
    "pplsip",
    "iWar",
    "sundayddr",
    "SIPBomber",
    "smap",
]


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8088
    log_requests: bool = True
    log_responses: bool = False  # deprecated: unused by the Go program too
    pprof_enabled: bool = False  # deprecated: Go-only
    pprof_addr: str = "127.0.0.1:6060"  # deprecated: Go-only
    api_token: str = ""
    api_token_file: str = ""
    protect_reads: bool = False


class FreeswitchConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    default_domain: str = "example.com"


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    security_ttl: float = 5.0
    cleanup_interval: float = 300.0


class ChanDaemonConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Unlike the Go program: off by default, no third-party URL by default.
    enabled: bool = False
    report_url: str = ""
    blocker_url: str = ""
    service_name: str = "freeswitch-security"
    report_timeout: float = 5.0
    allowed_api_ips: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])


class RateLimitConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    call_rate_limit: int = 20
    call_rate_interval: float = 60.0
    registration_limit: int = 10
    registration_window: float = 60.0
    auto_block_on_exceed: bool = True
    block_duration: float = 900.0
    whitelist_bypass: bool = True
    cleanup_interval: float = 300.0


class EnumerationConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    max_distinct_users: int = 5
    window: float = 60.0


class TollFraudConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    watch_profiles: list[str] = msgspec.field(default_factory=lambda: ["external"])
    watch_contexts: list[str] = msgspec.field(default_factory=lambda: ["public"])
    deny_prefixes: list[str] = msgspec.field(default_factory=lambda: ["00", "011", "+"])


class RecidiveConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    window: float = 86400.0
    factor: float = 4.0
    max_duration: float = 7 * 86400.0  # 0 = permanent


class CrowdsecConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """CrowdSec Local API: push local bans (watcher) and/or pull the fleet's (bouncer)."""

    enabled: bool = False
    lapi_url: str = ""
    machine_id: str = ""
    password: str = ""
    bouncer_api_key: str = ""
    poll_interval: float = 10.0
    origins: list[str] = msgspec.field(default_factory=list)
    scenarios_containing: list[str] = msgspec.field(default_factory=list)
    scenarios_not_containing: list[str] = msgspec.field(default_factory=list)
    push_simulated: bool = False
    timeout: float = 5.0

    @property
    def push(self) -> bool:
        """Watcher credentials set: local bans are pushed."""
        return self.enabled and bool(self.machine_id and self.password)

    @property
    def pull(self) -> bool:
        """Bouncer key set: the fleet's decisions are pulled and enforced."""
        return self.enabled and bool(self.bouncer_api_key)
class ExtensionScanConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Calls from one source ending in "no such number" causes (issue 12)."""

    max_failed_calls: int = 10
    window: float = 60.0
    hangup_causes: list[str] = msgspec.field(
        default_factory=lambda: [
            "NO_ROUTE_DESTINATION",
            "UNALLOCATED_NUMBER",
            "USER_NOT_REGISTERED",
        ]
    )


class BareIpConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Requests to an IP literal instead of a SIP domain (the rule is off by default)."""

    allowed_hosts: list[str] = msgspec.field(default_factory=list)  # IPs/CIDRs that are fine


RULE_MODES: tuple[str, ...] = ("ban", "simulate", "off")


class RuleMode(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    mode: str = "ban"  # ban | simulate | off


def _off() -> RuleMode:
    return RuleMode(mode="off")


class RulesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`security.rules.<rule>.mode`; the field names are the BanDecision.rule names."""

    failed_auth: RuleMode = msgspec.field(default_factory=RuleMode)
    user_enumeration: RuleMode = msgspec.field(default_factory=RuleMode)
    registration_rate: RuleMode = msgspec.field(default_factory=RuleMode)
    call_rate: RuleMode = msgspec.field(default_factory=RuleMode)
    wrong_call_state: RuleMode = msgspec.field(default_factory=RuleMode)
    untrusted_domain: RuleMode = msgspec.field(default_factory=RuleMode)
    untrusted_network: RuleMode = msgspec.field(default_factory=RuleMode)
    scanner_user_agent: RuleMode = msgspec.field(default_factory=RuleMode)
    toll_fraud: RuleMode = msgspec.field(default_factory=RuleMode)
    extension_scan: RuleMode = msgspec.field(default_factory=RuleMode)
    bare_ip: RuleMode = msgspec.field(default_factory=_off)

    def mode_of(self, rule: str) -> str:
        entry = getattr(self, rule, None)
        return entry.mode if isinstance(entry, RuleMode) else "ban"


class SecurityConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    esl_password: str = "ClueCon"
    esl_allowed_commands: list[str] = msgspec.field(
        default_factory=lambda: ["status", "uptime", "version"]
    )
    max_failed_attempts: int = 5
    failed_attempts_window: float = 600.0
    auto_block_enabled: bool = True
    block_duration: float = 3600.0
    whitelist_enabled: bool = True  # deprecated: no effect in the Go program
    whitelist_ttl: float = 86400.0
    trusted_networks: list[str] = msgspec.field(
        default_factory=lambda: list(DEFAULT_TRUSTED_NETWORKS)
    )
    untrusted_networks: list[str] = msgspec.field(default_factory=list)
    iptables_chain: str = "INPUT"
    ipset_name: str = "freeswitch-security"
    firewall_backend: str = "ipset"  # "ipset" (ipset + iptables, as Go) or "nftables"
    nftables_table: str = "fsguard"  # the nftables backend's own `inet` table
    dry_run: bool = False
    auto_whitelist_on_success: bool = True
    esl_log_level: str = "info"
    reconnect_backoff: float = 5.0
    max_wrong_call_states: int = 5
    wrong_call_state_window: float = 600.0
    scanner_user_agents: list[str] = msgspec.field(
        default_factory=lambda: list(DEFAULT_SCANNER_USER_AGENTS)
    )
    ipv6_ban_prefix: int = 128
    keep_foreign_entries: bool = False  # reconcile keeps kernel entries with no record
    drift_check_interval: float = 60.0  # seconds between kernel <-> store drift checks
    # A clean stop keeps the sets and DROP rules (bans stay enforced while fsguard restarts);
    # true removes exactly what fsguard created, as `fsguard teardown` does.
    remove_rules_on_stop: bool = False
    chandaemon: ChanDaemonConfig = msgspec.field(default_factory=ChanDaemonConfig)
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    enumeration: EnumerationConfig = msgspec.field(default_factory=EnumerationConfig)
    toll_fraud: TollFraudConfig = msgspec.field(default_factory=TollFraudConfig)
    recidive: RecidiveConfig = msgspec.field(default_factory=RecidiveConfig)
    crowdsec: CrowdsecConfig = msgspec.field(default_factory=CrowdsecConfig)
    # issue 12: protected sources, ban budget, new rules, rule modes
    max_bans_per_minute: int = 60  # more automatic bans in a minute: alert metric + log
    gateway_refresh_interval: float = 300.0  # `sofia xmlstatus gateway` period
    extension_scan: ExtensionScanConfig = msgspec.field(default_factory=ExtensionScanConfig)
    bare_ip: BareIpConfig = msgspec.field(default_factory=BareIpConfig)
    rules: RulesConfig = msgspec.field(default_factory=RulesConfig)


class PathsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    runtime_dir: str = "/run/fsguard"
    state_dir: str = "/var/lib/fsguard"


class WorkersConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    count: int = 0  # 0 = CPU count clamped to 2..8
    max_tracked_ips: int = 200_000
    queue_size: int = 8192  # per-worker ZeroMQ high-water mark, in messages
    queue_bytes: int = 64 * 1024 * 1024  # per-worker bound in bytes (a message: <= 256 KiB)


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: str = "auto"  # "auto" (human on a terminal, else JSON), "json" or "human"
    level: str = "info"
    audit_file: str = ""  # "" = <state_dir>/audit.log
    audit_max_bytes: int = 100 * 1024 * 1024  # audit.log(+.1) and audit.db each; 0 = no limit
    audit_max_age: float = 90 * 86400.0  # seconds ("90d"); 0 = no limit


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    freeswitch: FreeswitchConfig = msgspec.field(default_factory=FreeswitchConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    paths: PathsConfig = msgspec.field(default_factory=PathsConfig)
    workers: WorkersConfig = msgspec.field(default_factory=WorkersConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)


def worker_count(config: Config) -> int:
    """Configured worker count; 0 means the CPU count clamped to 2..8."""
    if config.workers.count > 0:
        return config.workers.count
    return max(2, min(8, os.cpu_count() or 2))


# --------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------

_log = logging.getLogger(__name__)

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
_ZERO_OK = frozenset({"security.recidive.max_duration", "logging.audit_max_age"})
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


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key, the value and the fix.

    A ValueError, so callers that already catch ValueError on load report it cleanly.
    """

    expected: str = ""  # what a valid value looks like, when known


# ---- scalar parsing ------------------------------------------------------

_DURATION_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # Go accepts both micro signs
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_UNIT_ALT = "|".join(sorted(_DURATION_UNITS, key=len, reverse=True))
_DURATION_PART = re.compile(rf"(\d+(?:\.\d*)?|\.\d+)({_UNIT_ALT})")
_DURATION_FULL = re.compile(rf"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:{_UNIT_ALT}))+")
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_HELP = 'a duration such as "250ms", "5s", "5m", "1h30m", "7d" or a number of seconds'


def _show(key: str, value: object) -> str:
    """Value as quoted in error messages; secrets are masked, long values cut."""
    if key.rsplit(".", 1)[-1] in SECRET_FIELDS and value not in ("", None):
        return MASK
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _invalid(key: str, value: object, expected: str) -> ConfigError:
    err = ConfigError(f"config key {key}: invalid value {_show(key, value)}: expected {expected}")
    err.expected = expected
    return err


# The longest timed ban (100 years): its expiry stays a valid calendar date everywhere it is
# shown or stored. Longer means permanent, which has its own flag.
MAX_BAN_SECONDS = 100 * 365 * 86400


def parse_duration(value: str | int | float, key: str) -> float:
    """Go-style duration ("1h30m", "1m0s", "250ms"), plus "d" and plain seconds."""
    seconds: float
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid(key, value, _DURATION_HELP)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if text.startswith("+"):
            text = text[1:]
        if _PLAIN_NUMBER.fullmatch(text):
            seconds = float(text)
        elif _DURATION_FULL.fullmatch(text):
            seconds = sum(
                float(num) * _DURATION_UNITS[unit] for num, unit in _DURATION_PART.findall(text)
            )
        elif text.startswith("-"):
            raise _invalid(key, value, "a duration that is not negative")
        else:
            raise _invalid(key, value, _DURATION_HELP)
    if not math.isfinite(seconds):
        raise _invalid(key, value, _DURATION_HELP)
    if seconds < 0:
        raise _invalid(key, value, "a duration that is not negative")
    return seconds


def parse_port(value: str | int, key: str) -> int:
    """TCP port from "8088" or 8088, 1..65535."""
    expected = 'a TCP port 1..65535 (number or string such as "8088")'
    if isinstance(value, bool):
        raise _invalid(key, value, expected)
    if isinstance(value, str) and re.fullmatch(r"\d{1,5}", value):
        port = int(value)
    elif isinstance(value, int):
        port = value
    else:
        raise _invalid(key, value, expected)
    if not 1 <= port <= 65535:
        raise _invalid(key, value, expected)
    return port


# ---- dotted-key helpers --------------------------------------------------


def _get(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj: Any, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def _raw_parent(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The dict holding `key`'s last part in the raw JSON, or None if absent."""
    node: Any = raw
    *parents, _ = key.split(".")
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None


def _raw_value(raw: Any, path: str) -> Any:
    """Value at a msgspec error path such as `.security.trusted_networks[1]`."""
    node = raw
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        try:
            node = node[name] if name else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _check_known_keys(raw: Any, info: msgspec.inspect.StructType, prefix: str) -> None:
    """Unknown keys are errors; the message names the dotted key (and a close match)."""
    if not isinstance(raw, dict):
        return  # msgspec.convert reports the type error with its path
    fields = {f.name: f.type for f in info.fields}
    for name, value in raw.items():
        dotted = f"{prefix}{name}"
        if name not in fields:
            hint = get_close_matches(str(name), list(fields), n=1)
            extra = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(f"unknown config key {dotted}{extra}")
        sub = fields[name]
        if isinstance(sub, msgspec.inspect.StructType):
            _check_known_keys(value, sub, dotted + ".")


# ---- environment ---------------------------------------------------------

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
            if seconds == 0 and key not in _ZERO_OK:
                raise _invalid(key, text, "a duration greater than 0")
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


def _apply_env(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    """Apply Go-named overrides; returns {dotted key: variable} for error messages."""
    origins: dict[str, str] = {}
    for var, key, kind in ENV_OVERRIDES + FSGUARD_ENV_OVERRIDES:
        text = env.get(var, "")
        if text == "":
            continue  # Go: an empty variable counts as unset
        _set(config, key, _parse_env(var, key, kind, text))
        origins[key] = var
        if key in DEPRECATED_KEYS:
            _log.warning(
                "config key %s (environment variable %s) is deprecated and ignored", key, var
            )
    return origins


# ---- semantic validation -------------------------------------------------

FIREWALL_BACKENDS = ("ipset", "nftables")
_IPSET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,28}")
_CHAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,28}")
_NFT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,27}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_STREAM_WORD = re.compile(r"[A-Za-z0-9_./:-]{1,128}")

_AT_LEAST_ONE = (
    "security.max_failed_attempts",
    "security.max_wrong_call_states",
    "security.rate_limit.call_rate_limit",
    "security.rate_limit.registration_limit",
    "security.enumeration.max_distinct_users",
    "security.extension_scan.max_failed_calls",
    "security.max_bans_per_minute",
    "workers.queue_size",
)


class _Validator:
    def __init__(self, config: Config, origins: Mapping[str, str]) -> None:
        self.config = config
        self.origins = origins

    def fail(self, key: str, value: object, expected: str) -> ConfigError:
        err = _invalid(key, value, expected)
        if key in self.origins:
            err = ConfigError(f"{err} (set by environment variable {self.origins[key]})")
        return err

    def choice(self, key: str, allowed: tuple[str, ...]) -> None:
        value = _get(self.config, key)
        if not isinstance(value, str) or value.lower() not in allowed:
            raise self.fail(key, value, "one of " + ", ".join(allowed))
        _set(self.config, key, value.lower())

    def int_range(self, key: str, low: int, high: int | None = None) -> None:
        value = _get(self.config, key)
        if value < low or (high is not None and value > high):
            expected = f"an integer >= {low}" if high is None else f"an integer {low}..{high}"
            raise self.fail(key, value, expected)

    def pattern(self, key: str, regex: re.Pattern[str], expected: str) -> None:
        value = _get(self.config, key)
        if not regex.fullmatch(value):
            raise self.fail(key, value, expected)

    def networks(self, key: str) -> None:
        cleaned: list[str] = []
        for index, entry in enumerate(_get(self.config, key)):
            text = entry.strip()
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise self.fail(
                    f"{key}[{index}]", entry, 'an IP address or CIDR such as "10.0.0.0/8"'
                ) from None
            cleaned.append(text)
        _set(self.config, key, cleaned)

    def url(self, key: str) -> None:
        value = _get(self.config, key)
        if value == "":
            return
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or _CONTROL.search(value):
            raise self.fail(key, value, "an http:// or https:// URL, or an empty string")

    def crowdsec(self) -> None:
        cs = self.config.security.crowdsec
        self.url("security.crowdsec.lapi_url")
        for name in ("origins", "scenarios_containing", "scenarios_not_containing"):
            for index, word in enumerate(getattr(cs, name)):
                if not _STREAM_WORD.fullmatch(word):
                    raise self.fail(
                        f"security.crowdsec.{name}[{index}]",
                        word,
                        "a non-empty word of A-Z a-z 0-9 _ . / : - (no commas)",
                    )
        for key in ("machine_id", "password", "bouncer_api_key"):
            value = getattr(cs, key)
            if value != value.strip() or _CONTROL.search(value):
                raise self.fail(
                    f"security.crowdsec.{key}",
                    value,
                    "no leading/trailing whitespace or control characters",
                )
        if bool(cs.machine_id) != bool(cs.password):
            missing = "password" if cs.machine_id else "machine_id"
            raise self.fail(
                f"security.crowdsec.{missing}",
                "",
                "security.crowdsec.machine_id and security.crowdsec.password set together",
            )
        if not cs.enabled:
            return
        if not cs.lapi_url:
            raise self.fail(
                "security.crowdsec.lapi_url",
                "",
                "a URL such as http://127.0.0.1:8080 when security.crowdsec.enabled is true",
            )
        if not (cs.push or cs.pull):
            raise ConfigError(
                "config key security.crowdsec.enabled is true but no role is configured: "
                "set security.crowdsec.machine_id and security.crowdsec.password (push bans "
                "as a watcher) and/or security.crowdsec.bouncer_api_key (pull decisions as a "
                "bouncer)"
            )

    def run(self) -> None:
        c = self.config
        for key in _AT_LEAST_ONE:
            self.int_range(key, 1)
        for key in sorted(DURATION_KEYS - _ZERO_OK):
            if _get(c, key) <= 0:
                raise self.fail(key, format_duration(_get(c, key)), "a duration greater than 0")
        for key in ("server.port", "security.esl_port"):
            self.int_range(key, 1, 65535)
        for key in ("server.host", "security.esl_host", "paths.runtime_dir", "paths.state_dir"):
            if not _get(c, key).strip():
                raise self.fail(key, _get(c, key), "a non-empty string")
        self.networks("security.trusted_networks")
        self.networks("security.chandaemon.allowed_api_ips")
        for index, pattern in enumerate(c.security.untrusted_networks):
            if not pattern.strip() or _CONTROL.search(pattern):
                raise self.fail(
                    f"security.untrusted_networks[{index}]",
                    pattern,
                    "a non-empty domain pattern without control characters",
                )
            problem = pattern_problem(pattern, c.security.trusted_networks, force=True)
            if problem is not None:
                raise self.fail(
                    f"security.untrusted_networks[{index}]",
                    pattern,
                    f"a pattern that bans neither everyone nor a trusted network ({problem})",
                )
        for index, command in enumerate(c.security.esl_allowed_commands):
            if not command or command != command.strip() or _CONTROL.search(command):
                raise self.fail(
                    f"security.esl_allowed_commands[{index}]",
                    command,
                    "a non-empty command without leading/trailing whitespace or control characters",
                )
        self.int_range("security.ipv6_ban_prefix", 48, 128)
        self.pattern(
            "security.ipset_name",
            _IPSET_NAME,
            "1-28 characters of A-Z a-z 0-9 _ . - (room for the -v6 suffix)",
        )
        self.pattern("security.iptables_chain", _CHAIN_NAME, "1-28 characters of A-Z a-z 0-9 _ -")
        self.choice("security.firewall_backend", FIREWALL_BACKENDS)
        nft_name = "an nftables name: a letter or _, then up to 27 of A-Z a-z 0-9 _ . -"
        self.pattern("security.nftables_table", _NFT_NAME, nft_name)
        if c.security.firewall_backend.lower() == "nftables":
            self.pattern("security.ipset_name", _NFT_NAME, nft_name)
        for rule in msgspec.structs.fields(RulesConfig):
            self.choice(f"security.rules.{rule.name}.mode", RULE_MODES)
        self.networks("security.bare_ip.allowed_hosts")
        self.choice("security.esl_log_level", LOG_LEVELS)
        self.choice("logging.level", LOG_LEVELS)
        self.choice("logging.format", LOG_FORMATS)
        self.int_range("workers.count", 0, 64)
        self.int_range("workers.max_tracked_ips", 1000)
        self.int_range("workers.queue_bytes", 1 << 20)  # one 256 KiB read must fit
        if 0 < c.logging.audit_max_bytes < 1 << 16 or c.logging.audit_max_bytes < 0:
            raise self.fail("logging.audit_max_bytes", c.logging.audit_max_bytes,
                            "0 (no limit) or at least 65536")
        if not c.security.recidive.factor >= 1 or not math.isfinite(c.security.recidive.factor):
            raise self.fail("security.recidive.factor", c.security.recidive.factor, "a number >= 1")
        self.url("security.chandaemon.report_url")
        self.url("security.chandaemon.blocker_url")
        if c.security.chandaemon.enabled and not c.security.chandaemon.report_url:
            raise self.fail(
                "security.chandaemon.report_url",
                "",
                "a URL when security.chandaemon.enabled is true",
            )
        self.crowdsec()
        if c.server.api_token and c.server.api_token_file:
            raise ConfigError(
                "config keys server.api_token and server.api_token_file are both set: "
                "expected at most one"
            )
        if c.server.api_token_file:
            api_token(c)  # unreadable or empty file: fail at load, not at first request


# ---- public API ----------------------------------------------------------


def find_config_path(explicit: str | None, *, search: tuple[str, ...] = CONFIG_SEARCH_PATHS) -> str:
    """The config file to use. An explicit path never falls back to the defaults.

    Unlike the Go program, never creates a file when none is found.
    """
    tried = [explicit] if explicit else list(search)
    for path in tried:
        if os.path.isfile(path):
            return path
    raise ConfigError("no configuration file found; tried: " + ", ".join(tried))


def load_config(path: str, *, env: Mapping[str, str] | None = None) -> Config:
    """File → normalised durations/ports → schema → Go env overrides → validation."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        raw = msgspec.json.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a JSON object at the top level")
    return config_from_dict(raw, env=os.environ if env is None else env)


def config_from_dict(raw: dict[str, Any], *, env: Mapping[str, str] | None = None) -> Config:
    """Build and validate a Config from decoded JSON (env defaults to none here)."""
    raw = copy.deepcopy(raw)
    info = msgspec.inspect.type_info(Config)
    assert isinstance(info, msgspec.inspect.StructType)
    _check_known_keys(raw, info, "")
    for key in sorted(DURATION_KEYS | PORT_KEYS):
        parent = _raw_parent(raw, key)
        name = key.rsplit(".", 1)[-1]
        if parent is not None and name in parent:
            value = parent[name]
            if key in PORT_KEYS:
                parent[name] = parse_port(value, key)
            elif (seconds := parse_duration(value, key)) == 0 and key not in _ZERO_OK:
                raise _invalid(key, value, "a duration greater than 0")
            else:
                parent[name] = seconds
    for key in sorted(DEPRECATED_KEYS):
        parent = _raw_parent(raw, key)
        if parent is not None and key.rsplit(".", 1)[-1] in parent:
            _log.warning("config key %s is deprecated and ignored", key)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).rpartition(" - at `$")
        path = path.rstrip("`")
        key = path.lstrip(".")
        if not message:
            raise ConfigError(f"invalid configuration: {exc}") from exc
        raise ConfigError(
            f"config key {key}: invalid value {_show(key, _raw_value(raw, path))}: {message}"
        ) from exc
    origins = _apply_env(config, env or {})
    _Validator(config, origins).run()
    return config


def api_token(config: Config) -> str:
    """The API token: server.api_token, or the stripped contents of server.api_token_file."""
    path = config.server.api_token_file
    if not path:
        return config.server.api_token
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config key server.api_token_file: cannot read {path!r}: {exc}") from exc
    if not token:
        raise ConfigError(f"config key server.api_token_file: file {path!r} is empty")
    return token


def _render(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, f"{key}.{k}" if key else k) for k, v in value.items()}
    if key in DURATION_KEYS:
        return format_duration(value)
    if key.rsplit(".", 1)[-1] in SECRET_FIELDS and value:
        return MASK
    return value


def effective_config_json(config: Config) -> str:
    """Pretty JSON of the effective config: secrets masked, durations as "5m"-style strings."""
    return json.dumps(_render(msgspec.to_builtins(config), ""), indent=2)
