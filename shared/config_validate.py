"""Semantic validation of a decoded Config (ranges, names, networks, URLs, choices).

Runs after the schema and the environment overrides; normalises a few values in place
(choices lower-cased, networks stripped). The first problem raises ConfigError.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec.structs

from shared.config_keys import (
    DURATION_KEYS,
    LOG_FORMATS,
    LOG_LEVELS,
    ZERO_OK_KEYS,
    ConfigError,
    get_key,
    invalid_value,
    set_key,
)
from shared.config_schema import RULE_MODES, Config, RulesConfig
from shared.durations import format_duration
from shared.protected import pattern_problem

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
        err = invalid_value(key, value, expected)
        if key in self.origins:
            err = ConfigError(f"{err} (set by environment variable {self.origins[key]})")
        return err

    def choice(self, key: str, allowed: tuple[str, ...]) -> None:
        value = get_key(self.config, key)
        if not isinstance(value, str) or value.lower() not in allowed:
            raise self.fail(key, value, "one of " + ", ".join(allowed))
        set_key(self.config, key, value.lower())

    def int_range(self, key: str, low: int, high: int | None = None) -> None:
        value = get_key(self.config, key)
        if value < low or (high is not None and value > high):
            expected = f"an integer >= {low}" if high is None else f"an integer {low}..{high}"
            raise self.fail(key, value, expected)

    def pattern(self, key: str, regex: re.Pattern[str], expected: str) -> None:
        value = get_key(self.config, key)
        if not regex.fullmatch(value):
            raise self.fail(key, value, expected)

    def networks(self, key: str) -> None:
        cleaned: list[str] = []
        for index, entry in enumerate(get_key(self.config, key)):
            text = entry.strip()
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise self.fail(
                    f"{key}[{index}]", entry, 'an IP address or CIDR such as "10.0.0.0/8"'
                ) from None
            cleaned.append(text)
        set_key(self.config, key, cleaned)

    def url(self, key: str) -> None:
        value = get_key(self.config, key)
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
        for key in sorted(DURATION_KEYS - ZERO_OK_KEYS):
            if get_key(c, key) <= 0:
                raise self.fail(key, format_duration(get_key(c, key)), "a duration greater than 0")
        for key in ("server.port", "security.esl_port"):
            self.int_range(key, 1, 65535)
        for key in ("server.host", "security.esl_host", "paths.runtime_dir", "paths.state_dir"):
            if not get_key(c, key).strip():
                raise self.fail(key, get_key(c, key), "a non-empty string")
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
            raise self.fail(
                "logging.audit_max_bytes",
                c.logging.audit_max_bytes,
                "0 (no limit) or at least 65536",
            )
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


def validate(config: Config, origins: Mapping[str, str]) -> None:
    """Check (and normalise) `config`; `origins` maps keys set by the environment to variables."""
    _Validator(config, origins).run()


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
