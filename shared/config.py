"""fsguard configuration: the loader, and the one import path for the config's names.

The JSON keys are the Go program's (freeswitch-security) plus fsguard's own.
Attribute names equal JSON keys. Durations are written as strings such as
"5m", "1h", "250ms" (or plain numbers of seconds) and are exposed as float
seconds. Ports accept "8088" or 8088 and are exposed as int.

Modules: config_schema (the Structs), config_keys (key tables, ConfigError),
config_values (parsing durations, ports), config_env (environment overrides),
config_validate (semantic checks). The loader here: find_config_path → load_config: JSON → durations
and ports normalised → schema (unknown keys are errors) → the Go program's
environment overrides (invalid values are errors, unlike Go) → validation.
Unlike the Go program it never writes a default config file.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any

import msgspec
import msgspec.inspect

# Public names other modules import from shared.config (one import path for the config).
from shared.config_env import ENV_OVERRIDES, FSGUARD_ENV_OVERRIDES, apply_env
from shared.config_keys import (
    CONFIG_SEARCH_PATHS,
    DEPRECATED_KEYS,
    DURATION_KEYS,
    LOG_FORMATS,
    LOG_LEVELS,
    MASK,
    PORT_KEYS,
    SECRET_FIELDS,
    ZERO_OK_KEYS,
    ConfigError,
    invalid_value,
    show_value,
)
from shared.config_schema import (
    DEFAULT_SCANNER_USER_AGENTS,
    DEFAULT_TRUSTED_NETWORKS,
    RULE_MODES,
    BareIpConfig,
    CacheConfig,
    ChanDaemonConfig,
    Config,
    CrowdsecConfig,
    EnumerationConfig,
    ExtensionScanConfig,
    FreeswitchConfig,
    LoggingConfig,
    PathsConfig,
    RateLimitConfig,
    RecidiveConfig,
    RuleMode,
    RulesConfig,
    SecurityConfig,
    ServerConfig,
    TollFraudConfig,
    WorkersConfig,
    worker_count,
)
from shared.config_validate import FIREWALL_BACKENDS, api_token, validate
from shared.config_values import MAX_BAN_SECONDS, parse_duration, parse_port
from shared.durations import format_duration

__all__ = [
    "CONFIG_SEARCH_PATHS",
    "DEFAULT_SCANNER_USER_AGENTS",
    "DEFAULT_TRUSTED_NETWORKS",
    "DEPRECATED_KEYS",
    "DURATION_KEYS",
    "ENV_OVERRIDES",
    "FIREWALL_BACKENDS",
    "FSGUARD_ENV_OVERRIDES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MASK",
    "MAX_BAN_SECONDS",
    "PORT_KEYS",
    "RULE_MODES",
    "SECRET_FIELDS",
    "BareIpConfig",
    "CacheConfig",
    "ChanDaemonConfig",
    "Config",
    "ConfigError",
    "CrowdsecConfig",
    "EnumerationConfig",
    "ExtensionScanConfig",
    "FreeswitchConfig",
    "LoggingConfig",
    "PathsConfig",
    "RateLimitConfig",
    "RecidiveConfig",
    "RuleMode",
    "RulesConfig",
    "SecurityConfig",
    "ServerConfig",
    "TollFraudConfig",
    "WorkersConfig",
    "api_token",
    "config_from_dict",
    "effective_config_json",
    "find_config_path",
    "format_duration",
    "load_config",
    "parse_duration",
    "parse_port",
    "worker_count",
]

_log = logging.getLogger(__name__)


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
            elif (seconds := parse_duration(value, key)) == 0 and key not in ZERO_OK_KEYS:
                raise invalid_value(key, value, "a duration greater than 0")
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
            f"config key {key}: invalid value {show_value(key, _raw_value(raw, path))}: {message}"
        ) from exc
    origins = apply_env(config, env or {})
    validate(config, origins)
    return config


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
