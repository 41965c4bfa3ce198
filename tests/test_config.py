"""Config loader: Go compatibility, durations, env overrides, validation messages."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shared.config import (
    DEPRECATED_KEYS,
    DURATION_KEYS,
    ENV_OVERRIDES,
    MASK,
    Config,
    ConfigError,
    api_token,
    config_from_dict,
    effective_config_json,
    find_config_path,
    load_config,
    parse_duration,
)
from shared.durations import format_duration

REPO = Path(__file__).resolve().parent.parent
GO_CONFIG = REPO / "tests" / "fixtures" / "go_config.json"
EXAMPLE = REPO / "config.example.json"


def write(tmp_path: Path, doc: dict[str, Any], name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def leaf_keys(doc: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in doc.items():
        if isinstance(value, dict):
            keys |= leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


ALL_KEYS = leaf_keys(msgspec.to_builtins(Config()))


# ---- defaults and shipped files -------------------------------------------


def test_defaults_are_fsguard_defaults() -> None:
    c = config_from_dict({})
    assert c == Config()
    assert c.server.port == 8088 and c.security.esl_port == 8021
    assert c.cache.security_ttl == 5.0  # Go: 5m; changed on purpose
    assert c.security.chandaemon.enabled is False
    assert c.security.chandaemon.report_url == ""
    assert c.security.chandaemon.allowed_api_ips == ["127.0.0.1", "::1"]
    assert c.security.failed_attempts_window == 600.0
    assert c.security.recidive.max_duration == 7 * 86400.0


def test_example_config_has_every_key_and_equals_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = json.loads(EXAMPLE.read_text())
    assert leaf_keys(doc) == ALL_KEYS - DEPRECATED_KEYS
    assert doc["server"]["port"] == "8088" and doc["security"]["esl_port"] == "8021"
    with caplog.at_level(logging.WARNING):
        assert load_config(str(EXAMPLE), env={}) == Config()
    assert not caplog.records


def test_duration_key_table_matches_schema() -> None:
    defaults = msgspec.to_builtins(Config())
    floats = {
        key
        for key in ALL_KEYS
        if isinstance(_lookup(defaults, key), float) and key != "security.recidive.factor"
    }
    assert floats == DURATION_KEYS


def _lookup(doc: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        doc = doc[part]
    return doc


# ---- Go compatibility -----------------------------------------------------


def test_go_config_loads_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.config"):
        c = load_config(str(GO_CONFIG), env={})
    assert c.server.port == 8088
    assert c.security.esl_port == 8021
    assert c.freeswitch.default_domain == "your-domain.com"
    assert c.cache.security_ttl == 300.0  # explicit Go value kept
    assert c.security.esl_allowed_commands[-1] == "show registrations"
    assert c.security.trusted_networks[0] == "127.0.0.1/8"
    assert c.security.untrusted_networks == ["suspicious-provider.com", "known-bad-domain.net"]
    assert c.security.iptables_chain == "FREESWITCH"
    assert c.security.whitelist_ttl == 86400.0
    assert c.security.wrong_call_state_window == 600.0
    cd = c.security.chandaemon
    assert cd.enabled is True
    assert cd.report_url == "https://ipban.support.voicetel.com/api/v1/ip-bans/report"
    assert cd.report_timeout == 5.0
    assert cd.allowed_api_ips == [
        "3.17.211.50",
        "104.225.13.77",
        "192.73.246.109",
        "127.0.0.1",
        "::1",
    ]
    assert c.security.rate_limit.block_duration == 900.0
    assert c.security.rate_limit.call_rate_interval == 60.0
    warned = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert warned == {f"config key {k} is deprecated and ignored" for k in DEPRECATED_KEYS}


def test_go_fixture_has_every_go_key() -> None:
    go_keys = {key for _, key, _ in ENV_OVERRIDES}
    assert leaf_keys(json.loads(GO_CONFIG.read_text())) == go_keys


def test_ports_as_int_or_string(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, {"server": {"port": 9000}, "security": {"esl_port": "8022"}}))
    assert (c.server.port, c.security.esl_port) == (9000, 8022)


# ---- durations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("1m0s", 60.0),
        ("1h0m0s", 3600.0),
        ("1.5h", 5400.0),
        ("1500us", 0.0015),
        ("2\u00b5s", 2e-6),
        ("100ns", 1e-7),
        ("0", 0.0),
        ("0s", 0.0),
        ("30", 30.0),
        ("2.5", 2.5),
        (" 5m ", 300.0),
        (45, 45.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text, "k") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", ["", "5x", "m", "1h-5m", "-5m", "-1", -3, "5 m", "1e3s", "inf", "nan", "1h 30m", True]
)
def test_parse_duration_errors_name_key_value_and_form(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(bad, "security.block_duration")
    msg = str(info.value)
    assert "security.block_duration" in msg
    assert repr(bad) in msg
    assert "duration" in msg


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (3600, "1h"), (0.25, "250ms"), (5400, "1h30m"), (0, "0s"), (90.5, "1m30s500ms")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, "k") == pytest.approx(seconds)


# ---- invalid values -------------------------------------------------------

INVALID: list[tuple[str, Any]] = [
    ("server.port", "0"),
    ("server.port", 70000),
    ("server.port", "http"),
    ("server.port", True),
    ("security.esl_port", "80 21"),
    ("server.host", " "),
    ("security.max_failed_attempts", 0),
    ("security.max_failed_attempts", "5"),
    ("security.max_wrong_call_states", -1),
    ("security.rate_limit.call_rate_limit", 0),
    ("security.rate_limit.registration_limit", 0),
    ("security.enumeration.max_distinct_users", 0),
    ("security.block_duration", "0s"),
    ("security.block_duration", "forever"),
    ("security.failed_attempts_window", 0),
    ("security.rate_limit.call_rate_interval", "0"),
    ("security.enumeration.window", "-1m"),
    ("cache.security_ttl", "0s"),
    ("security.trusted_networks", ["10.0.0.0/8", "10.0.0.300/8"]),
    ("security.trusted_networks", ["not-a-network"]),
    ("security.chandaemon.allowed_api_ips", ["127.0.0.1", "example.com"]),
    ("security.ipv6_ban_prefix", 47),
    ("security.ipv6_ban_prefix", 129),
    ("security.ipset_name", "this-name-is-far-too-long-for-v6"),
    ("security.ipset_name", "bad name"),
    ("security.iptables_chain", "bad;chain"),
    ("security.iptables_chain", ""),
    ("security.esl_log_level", "verbose"),
    ("logging.level", "loud"),
    ("logging.format", "xml"),
    ("workers.count", 65),
    ("workers.count", -1),
    ("workers.max_tracked_ips", 999),
    ("security.esl_allowed_commands", ["status", " uptime"]),
    ("security.esl_allowed_commands", [""]),
    ("security.esl_allowed_commands", ["status\napi system"]),
    ("security.recidive.factor", 0.5),
    ("security.chandaemon.report_url", "ftp://example.com/x"),
    ("security.chandaemon.report_url", "not a url"),
    ("security.chandaemon.blocker_url", "javascript:alert(1)"),
    ("security.untrusted_networks", ["ok.example", ""]),
    ("security.dry_run", "yes"),
    ("security.scanner_user_agents", "sipvicious"),
]


def _nest(key: str, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    node = doc
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return doc


@pytest.mark.parametrize(("key", "value"), INVALID)
def test_invalid_value_message_names_key_and_value(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(_nest(key, value))
    msg = str(info.value)
    assert key in msg, msg
    shown = value[-1] if isinstance(value, list) else value
    assert repr(shown) in msg or repr(str(shown)) in msg, msg
    assert "expected" in msg.lower(), msg


def test_chandaemon_enabled_requires_report_url() -> None:
    with pytest.raises(ConfigError, match=r"security\.chandaemon\.report_url"):
        config_from_dict({"security": {"chandaemon": {"enabled": True}}})


def test_zero_recidive_max_duration_means_permanent() -> None:
    c = config_from_dict({"security": {"recidive": {"max_duration": "0"}}})
    assert c.security.recidive.max_duration == 0.0


def test_levels_are_case_insensitive_and_stored_lowercase() -> None:
    c = config_from_dict(
        {"security": {"esl_log_level": "DEBUG"}, "logging": {"level": "Trace", "format": "HUMAN"}}
    )
    assert (c.security.esl_log_level, c.logging.level, c.logging.format) == (
        "debug",
        "trace",
        "human",
    )


def test_networks_accept_host_bits_and_ipv6() -> None:
    c = config_from_dict(
        {"security": {"trusted_networks": ["127.0.0.1/8", "2001:db8::/32", "192.0.2.7"]}}
    )
    assert c.security.trusted_networks == ["127.0.0.1/8", "2001:db8::/32", "192.0.2.7"]


def test_invalid_password_type_is_masked() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"security": {"esl_password": 123456789}})
    assert "security.esl_password" in str(info.value)
    assert "123456789" not in str(info.value)


@pytest.mark.parametrize(
    ("doc", "dotted"),
    [
        ({"sever": {}}, "sever"),
        ({"security": {"max_failed_attempt": 3}}, "security.max_failed_attempt"),
        ({"security": {"rate_limit": {"burst": 3}}}, "security.rate_limit.burst"),
    ],
)
def test_unknown_key_names_dotted_key(doc: dict[str, Any], dotted: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown config key {dotted}\b"):
        config_from_dict(doc)


def test_unknown_key_suggests_close_match() -> None:
    with pytest.raises(ConfigError, match=r"did you mean security\.max_failed_attempts"):
        config_from_dict({"security": {"max_failed_attempt": 3}})


def test_malformed_json_and_non_object(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"server": ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(bad), env={})
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(str(bad), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.json"), env={})


# ---- finding the file -----------------------------------------------------


def test_missing_file_names_all_paths_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    etc = str(tmp_path / "etc" / "fsguard" / "config.json")
    with pytest.raises(ConfigError) as info:
        find_config_path(None, search=("./config.json", etc))
    assert "./config.json" in str(info.value) and etc in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_default_search_names_etc_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.path.exists("/etc/fsguard/config.json"):
        pytest.skip("a real /etc/fsguard/config.json exists here")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=re.escape("/etc/fsguard/config.json")):
        find_config_path(None)
    assert list(tmp_path.iterdir()) == []


def test_explicit_path_never_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert find_config_path(None) == "./config.json"
    with pytest.raises(ConfigError, match=re.escape("nope.json")):
        find_config_path(str(tmp_path / "nope.json"))
    explicit = write(tmp_path, {}, "other.json")
    assert find_config_path(explicit) == explicit


# ---- environment ----------------------------------------------------------


def test_env_overrides_every_kind(tmp_path: Path) -> None:
    env = {
        "SERVER_HOST": "0.0.0.0",
        "SERVER_PORT": "9090",
        "SECURITY_DRY_RUN": "YES",
        "SECURITY_AUTO_BLOCK": "nope",  # Go: any other non-empty value is false
        "CACHE_ENABLED": "1",
        "SECURITY_MAX_FAILED_ATTEMPTS": "10",
        "SECURITY_FAILED_WINDOW": "1h30m",
        "SECURITY_TRUSTED_NETWORKS": '["10.0.0.0/8"]',
        "SECURITY_CHANDAEMON_ALLOWED_API_IPS": "[]",
        "SECURITY_ESL_PASSWORD": "s3cret",
        "SECURITY_RATE_LIMIT_CALL_LIMIT": "+7",
        "SECURITY_IPSET_NAME": "",  # empty = unset
    }
    c = load_config(write(tmp_path, {"security": {"max_failed_attempts": 3}}), env=env)
    assert c.server.host == "0.0.0.0" and c.server.port == 9090
    assert c.security.dry_run is True
    assert c.security.auto_block_enabled is False
    assert c.cache.enabled is True
    assert c.security.max_failed_attempts == 10
    assert c.security.failed_attempts_window == 5400.0
    assert c.security.trusted_networks == ["10.0.0.0/8"]
    assert c.security.chandaemon.allowed_api_ips == []
    assert c.security.esl_password == "s3cret"
    assert c.security.rate_limit.call_rate_limit == 7
    assert c.security.ipset_name == "freeswitch-security"


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECURITY_ESL_HOST", "192.0.2.10")
    assert load_config(write(tmp_path, {})).security.esl_host == "192.0.2.10"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SECURITY_MAX_FAILED_ATTEMPTS", "ten"),
        ("SECURITY_MAX_FAILED_ATTEMPTS", "1_000"),
        ("SERVER_PORT", "99999"),
        ("SECURITY_ESL_PORT", "http"),
        ("SECURITY_BLOCK_DURATION", "an hour"),
        ("SECURITY_TRUSTED_NETWORKS", "10.0.0.0/8"),
        ("SECURITY_ESL_ALLOWED_COMMANDS", '["status", 5]'),
        ("SECURITY_CHANDAEMON_ALLOWED_API_IPS", '{"a": 1}'),
    ],
)
def test_invalid_env_value_is_an_error(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({}, env={var: value})
    assert var in str(info.value) and repr(value) in str(info.value)


def test_env_value_failing_validation_names_variable() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({}, env={"SECURITY_MAX_FAILED_ATTEMPTS": "0"})
    assert "security.max_failed_attempts" in str(info.value)
    assert "SECURITY_MAX_FAILED_ATTEMPTS" in str(info.value)


def test_env_deprecated_key_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.config"):
        config_from_dict({}, env={"SERVER_PPROF_ENABLED": "true"})
    assert any("server.pprof_enabled" in r.getMessage() for r in caplog.records)


# ---- effective config and token ------------------------------------------


def test_effective_config_masks_secrets_and_renders_durations() -> None:
    c = config_from_dict(
        {
            "server": {"api_token": "tok-very-secret"},
            "security": {"esl_password": "hunter2-password", "block_duration": "1h30m"},
        }
    )
    text = effective_config_json(c)
    assert "hunter2-password" not in text and "tok-very-secret" not in text
    doc = json.loads(text)
    assert doc["security"]["esl_password"] == MASK
    assert doc["server"]["api_token"] == MASK
    assert doc["security"]["block_duration"] == "1h30m"
    assert doc["cache"]["security_ttl"] == "5s"
    assert doc["security"]["rate_limit"]["block_duration"] == "15m"
    assert doc["server"]["port"] == 8088
    # Empty secrets stay empty (so "no token configured" is visible).
    assert json.loads(effective_config_json(Config()))["server"]["api_token"] == ""


def test_effective_config_reloads_to_the_same_config(tmp_path: Path) -> None:
    doc = json.loads(effective_config_json(Config()))
    doc["security"]["esl_password"] = "ClueCon"
    assert load_config(write(tmp_path, doc), env={}) == Config()


def test_api_token_inline_and_file(tmp_path: Path) -> None:
    assert api_token(config_from_dict({"server": {"api_token": "abc"}})) == "abc"
    token_file = tmp_path / "token"
    token_file.write_text("  file-token\n")
    c = config_from_dict({"server": {"api_token_file": str(token_file)}})
    assert api_token(c) == "file-token"


@pytest.mark.parametrize("content", [None, "   \n"])
def test_api_token_file_missing_or_empty_fails_at_load(tmp_path: Path, content: str | None) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(ConfigError, match=r"server\.api_token_file"):
        config_from_dict({"server": {"api_token_file": str(token_file)}})


def test_api_token_and_file_together_rejected(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("x")
    with pytest.raises(ConfigError, match="both set"):
        config_from_dict({"server": {"api_token": "y", "api_token_file": str(token_file)}})


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("SECURITY_BLOCK_DURATION", "0", "greater than 0"),
        ("SECURITY_BLOCK_DURATION", "-1h", "not negative"),
        ("SERVER_PORT", "0", "1..65535"),
    ],
)
def test_env_error_says_what_is_expected(var: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        config_from_dict({}, env={var: value})
    assert var in str(info.value) and repr(value) in str(info.value)
