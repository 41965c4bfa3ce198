"""Render docs/rules.md from the rule catalog and the config defaults.

Regenerate: `.venv/bin/python -m fsguard_workers.rules.doc > docs/rules.md`
"""

from __future__ import annotations

import json
import sys
from typing import Any

from shared.config import DURATION_KEYS, Config
from shared.durations import format_duration

from .catalog import RULES, RuleSpec

REGENERATE = ".venv/bin/python -m fsguard_workers.rules.doc > docs/rules.md"


def _default(config: Config, key: str) -> str:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    if key in DURATION_KEYS:
        return format_duration(value)
    return json.dumps(value)


def _section(rule: RuleSpec, config: Config) -> str:
    mode_key = f"security.rules.{rule.name}.mode"
    keys = (mode_key, *rule.keys, rule.duration_key)
    rows = "\n".join(f"| `{k}` | `{_default(config, k)}` |" for k in dict.fromkeys(keys))
    lines = [
        f"## `{rule.name}`: {rule.title}",
        "",
        "- **Events read:** " + ", ".join(f"`{e}`" for e in rule.events),
        f"- **Counts:** {rule.counts}",
        f"- **Ban duration:** `{rule.duration_key}` "
        f"(default {_default(config, rule.duration_key)}), escalated by `security.recidive`",
        f"- **Reason:** `{rule.reason(config)}`",
    ]
    if rule.kills:
        lines.append(f"- **Kills the call:** yes (`uuid_kill`, reason `{rule.kills}`)")
    if rule.notes:
        lines.append(f"- **Note:** {rule.notes}")
    lines += ["", "| key | default |", "|---|---|", rows, ""]
    return "\n".join(lines)


def render() -> str:
    config = Config()
    head = [
        "# Detection rules",
        "",
        f"Generated from `fsguard_workers/rules/catalog.py`; regenerate with `{REGENERATE}`.",
        "",
        "Every rule has `security.rules.<rule>.mode`: `ban` (decide and apply), "
        "`simulate` (log, record in GET /security/simulated and the audit stream, "
        'count in `fsguard_simulated_decisions_total{simulated="true"}`; never the '
        "kernel, never a call kill) or `off`.",
        "",
        "Protected sources: an address holding a successful registration with a "
        "non-scanner User-Agent (until it expires), a gateway configured in FreeSWITCH "
        "(`sofia xmlstatus gateway`, asked at connect and every "
        "`security.gateway_refresh_interval`), an operator whitelist entry; trusted "
        "networks skip every rule. More than `security.max_bans_per_minute` automatic "
        "bans in a minute raises `fsguard_ban_budget_exceeded_total` and a log line; "
        "banning continues.",
        "",
        "| rule | events | default mode |",
        "|---|---|---|",
    ]
    for rule in RULES:
        mode = config.security.rules.mode_of(rule.name)
        head.append(f"| `{rule.name}` | {', '.join(rule.events)} | `{mode}` |")
    head.append("")
    return "\n".join(head) + "\n" + "\n".join(_section(r, config) for r in RULES)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
