"""docs/config.md, generated from the schema in shared/config.py.

    python -m shared.config_doc > docs/config.md      (or: make config-doc)

Every key of `Config` gets a row: type, default, the environment variable that overrides
it (the Go program's names), whether a reload applies it, and a short description.
tests/test_config_doc.py fails when the committed page differs from this output.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import msgspec.inspect

from shared.config import (
    DEPRECATED_KEYS,
    DURATION_KEYS,
    ENV_OVERRIDES,
    FSGUARD_ENV_OVERRIDES,
    LOG_FORMATS,
    LOG_LEVELS,
    PORT_KEYS,
    SECRET_FIELDS,
    Config,
)
from shared.durations import format_duration
from shared.reloadable import is_reloadable  # the one list of reloadable keys

DESCRIPTIONS: dict[str, str] = {
    "server.host": "address the REST API listens on",
    "server.port": "REST API port",
    "server.log_requests": "log one line per API request",
    "server.log_responses": "unused (the Go program ignored it too)",
    "server.pprof_enabled": "Go profiler; unused",
    "server.pprof_addr": "Go profiler address; unused",
    "server.api_token": "bearer token required on protected requests; empty: none",
    "server.api_token_file": "file holding the API token (instead of api_token)",
    "server.protect_reads": "GETs exposing SIP users or ESL details also need the token",
    "freeswitch.default_domain": "SIP domain of whitelist entries added without one",
    "cache.enabled": "cache GET /security/* answers",
    "cache.security_ttl": "how long a cached answer is served",
    "cache.cleanup_interval": "expired cache entries are dropped this often",
    "security.enabled": "the /security routes and detection; false: API health/cache only",
    "security.esl_host": "FreeSWITCH Event Socket host",
    "security.esl_port": "FreeSWITCH Event Socket port",
    "security.esl_password": "Event Socket password",
    "security.esl_allowed_commands": "commands POST /security/esl/command may run (+ arguments)",
    "security.max_failed_attempts": "failed registrations from one address before a ban",
    "security.failed_attempts_window": "window over which failed registrations are counted",
    "security.auto_block_enabled": "rules ban on their own (false: detect and log only)",
    "security.block_duration": "ban length for rule bans and manual bans without a duration",
    "security.whitelist_enabled": "no effect (as in the Go program)",
    "security.whitelist_ttl": "lifetime of a whitelist entry learned from a registration",
    "security.trusted_networks": "CIDRs never banned",
    "security.untrusted_networks": "SIP domains, *.suffix or CIDRs banned on sight",
    "security.iptables_chain": "chain holding the DROP rules",
    "security.ipset_name": "kernel set name (IPv6: <name>-v6)",
    "security.firewall_backend": "`ipset` (+ iptables, as Go) or `nftables` (docs/nftables.md)",
    "security.nftables_table": "the nftables backend's own `inet` table",
    "security.dry_run": "never touch the kernel; log what would be done",
    "security.auto_whitelist_on_success": "a successful registration whitelists its address",
    "security.esl_log_level": "level of the ESL client's log lines",
    "security.reconnect_backoff": "wait between ESL reconnection attempts",
    "security.max_wrong_call_states": "wrong call states from one address before a ban",
    "security.wrong_call_state_window": "window over which wrong call states are counted",
    "security.scanner_user_agents": "User-Agent substrings banned on sight",
    "security.ipv6_ban_prefix": "IPv6 bans cover this prefix length (128: the address)",
    "security.keep_foreign_entries": "reconcile keeps kernel set entries fsguard has no record of",
    "security.remove_rules_on_stop": "a clean stop removes fsguard's sets, rules and table "
    "(default: kept, so bans stay enforced across a restart)",
    "security.drift_check_interval": "how often the kernel sets are compared with the store",
    # issue 12 (docs/rules.md has what each rule reads and counts)
    "security.max_bans_per_minute": (
        "more automatic bans in a minute raise fsguard_ban_budget_exceeded_total and a log "
        "line; banning continues"
    ),
    "security.gateway_refresh_interval": (
        "how often FreeSWITCH's gateways (protected sources) are asked with "
        "`sofia xmlstatus gateway` (also at every ESL connect)"
    ),
    "security.extension_scan.max_failed_calls": (
        "calls ending with one of hangup_causes within the window that ban (extension scanning)"
    ),
    "security.extension_scan.window": "the extension-scanning window",
    "security.extension_scan.hangup_causes": (
        "Hangup-Cause values that count as a probe of an unknown extension"
    ),
    "security.bare_ip.allowed_hosts": (
        "IP literals (or CIDRs) accepted as the To / Request-URI host by the bare_ip rule"
    ),
    "security.rules.failed_auth.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.user_enumeration.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.registration_rate.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.call_rate.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.wrong_call_state.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.untrusted_domain.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.untrusted_network.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.scanner_user_agent.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.toll_fraud.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.extension_scan.mode": "ban, simulate or off (docs/rules.md)",
    "security.rules.bare_ip.mode": "ban, simulate or off (docs/rules.md)",
    "security.chandaemon.enabled": "report bans to chanDaemon",
    "security.chandaemon.report_url": "chanDaemon report endpoint",
    "security.chandaemon.blocker_url": "chanDaemon blocker endpoint",
    "security.chandaemon.service_name": "service name sent with reports",
    "security.chandaemon.report_timeout": "HTTP timeout of one report",
    "security.chandaemon.allowed_api_ips": "source addresses allowed to change state via the API",
    "security.rate_limit.enabled": "call and registration rate limits",
    "security.rate_limit.call_rate_limit": "calls per interval from one address",
    "security.rate_limit.call_rate_interval": "call rate interval",
    "security.rate_limit.registration_limit": "registrations per window from one address",
    "security.rate_limit.registration_window": "registration rate window",
    "security.rate_limit.auto_block_on_exceed": "ban an address that exceeds a rate limit",
    "security.rate_limit.block_duration": "ban length for rate-limit bans",
    "security.rate_limit.whitelist_bypass": "whitelisted addresses are not rate limited",
    "security.rate_limit.cleanup_interval": "idle rate counters are dropped this often",
    "security.enumeration.enabled": "ban an address trying many distinct SIP users",
    "security.enumeration.max_distinct_users": "distinct users per window before a ban",
    "security.enumeration.window": "enumeration window",
    "security.toll_fraud.enabled": "ban calls from watched profiles to denied prefixes",
    "security.toll_fraud.watch_profiles": "SIP profiles watched",
    "security.toll_fraud.watch_contexts": "dialplan contexts watched",
    "security.toll_fraud.deny_prefixes": "destination prefixes denied from those",
    "security.recidive.enabled": "repeat offenders get longer bans",
    "security.recidive.window": "bans counted over this window",
    "security.recidive.factor": "each prior ban multiplies the duration by this",
    "security.recidive.max_duration": "longest escalated ban (0: permanent)",
    "security.crowdsec.enabled": "run the CrowdSec LAPI connector (docs/fleet.md)",
    "security.crowdsec.lapi_url": "CrowdSec Local API URL, http:// or https://",
    "security.crowdsec.machine_id": "watcher machine (cscli machines add): push local bans",
    "security.crowdsec.password": "watcher password",
    "security.crowdsec.bouncer_api_key": "bouncer key (cscli bouncers add): pull decisions",
    "security.crowdsec.poll_interval": "how often the decision stream is pulled",
    "security.crowdsec.origins": "only decisions of these origins (empty: all)",
    "security.crowdsec.scenarios_containing": "only decisions whose scenario has one of these",
    "security.crowdsec.scenarios_not_containing": "no decisions whose scenario has one of these",
    "security.crowdsec.push_simulated": "push alerts marked simulated",
    "security.crowdsec.timeout": "bound of every LAPI call (connect and each read)",
    "paths.runtime_dir": "control sockets (ipc)",
    "paths.state_dir": "fsguard.db (bans, lists), audit log",
    "workers.count": "worker processes (0: CPU count, 2..8)",
    "workers.max_tracked_ips": "per-worker cap on tracked addresses",
    "workers.queue_size": "per-worker event queue (messages)",
    "workers.queue_bytes": "per-worker event queue bound in bytes (at least 1 MiB)",
    "logging.format": "auto: human on a terminal, else JSON lines; json; human",
    "logging.level": "log level of every process",
    "logging.audit_file": "audit log file (empty: <state_dir>/audit.log)",
    "logging.audit_max_bytes": "audit.log (+ .1) and audit.db size bound each (0: none)",
    "logging.audit_max_age": "audit records older than this are removed (0: never)",
}

HEADER = """# Configuration reference

Generated from the schema in `shared/config.py` by `python -m shared.config_doc`; do not
edit by hand (`tests/test_config_doc.py` keeps it current). The file is JSON
(`config.example.json`); unknown keys are errors; `fsguard check-config FILE` validates a
file and prints the effective configuration, secrets masked.

- **Durations** are strings such as `"250ms"`, `"5m"`, `"1h30m"`, `"7d"` or a number of
  seconds. **Ports** are a number or a numeric string.
- **Environment**: the variable, when set and not empty, overrides the file (the Go
  program's names; invalid values are errors). Lists are JSON arrays: `["a","b"]`.
- **Reload**: *yes* keys are applied by `SIGHUP`, `fsguard reload` or
  `POST /security/reload` without a restart (counters, windows and bans survive); *restart*
  keys are reported by the reload and need `systemctl restart fsguard.target`.
- File search when `--config` is not given: `./config.json`, then `/etc/fsguard/config.json`.
"""


def _type_name(key: str, tp: msgspec.inspect.Type) -> str:
    if key in DURATION_KEYS:
        return "duration"
    if key in PORT_KEYS:
        return "port"
    if key == "logging.format":
        return " \\| ".join(LOG_FORMATS)
    if key in ("logging.level", "security.esl_log_level"):
        return " \\| ".join(LOG_LEVELS)
    if isinstance(tp, msgspec.inspect.ListType):
        return "list of strings"
    return {
        msgspec.inspect.BoolType: "bool",
        msgspec.inspect.IntType: "int",
        msgspec.inspect.FloatType: "number",
        msgspec.inspect.StrType: "string",
    }.get(type(tp), type(tp).__name__)


def _default_text(key: str, value: Any) -> str:
    if key.rsplit(".", 1)[-1] in SECRET_FIELDS and value:
        return f"`{value}` (change it)"
    if key in DURATION_KEYS:
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`" + msgspec.json.encode(value).decode() + "`" if value else "`[]`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def rows() -> list[tuple[str, str, str, str, str, str]]:
    """(key, type, default, env var, reload, description) for every leaf key, schema order."""
    env = {key: var for var, key, _ in ENV_OVERRIDES + FSGUARD_ENV_OVERRIDES}
    defaults = msgspec.to_builtins(Config())
    out: list[tuple[str, str, str, str, str, str]] = []

    def walk(struct: msgspec.inspect.StructType, values: dict[str, Any], prefix: str) -> None:
        for field in struct.fields:
            key = prefix + field.name
            if isinstance(field.type, msgspec.inspect.StructType):
                walk(field.type, values[field.name], key + ".")
                continue
            note = DESCRIPTIONS.get(key, "")
            if key in DEPRECATED_KEYS:
                note = f"deprecated, ignored; {note}" if note else "deprecated, ignored"
            out.append((
                f"`{key}`", _type_name(key, field.type), _default_text(key, values[field.name]),
                f"`{env[key]}`" if key in env else "", "yes" if is_reloadable(key) else "restart",
                note,
            ))  # fmt: skip

    root = msgspec.inspect.type_info(Config)
    assert isinstance(root, msgspec.inspect.StructType)
    walk(root, defaults, "")
    return out


def render() -> str:
    lines = [HEADER]
    section = ""
    for row in rows():
        top = row[0].strip("`").split(".")[0]
        if top != section:
            section = top
            lines += [
                f"\n## {section}\n",
                "| key | type | default | environment | reload | description |",
                "|---|---|---|---|---|---|",
            ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") if i != 1 else cell
                                       for i, cell in enumerate(row)) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
