"""Which config keys a reload applies at run time, and how a reload order is computed.

The one list: `RELOADABLE_PREFIXES`. A dotted key path (`security.rate_limit.enabled`,
`security.trusted_networks[2]`) is reloadable when it equals an entry or starts with an
entry that ends in ".". Every other key (ports, hosts, paths, worker count, set and chain
names, secrets, the log format ...) needs a restart: a reload reports it and leaves it
alone. docs/config.md's "reloadable" column is generated from `is_reloadable`.

A reload applies a change *in place*: the running process keeps its Config object and
every nested section object, and only the changed reloadable leaves are re-assigned, so
code holding `config.security` (the detection engine, the API routes) sees the new values
at its next read, and counters, windows and bans are not touched.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec

from shared.config import Config
from shared.config_keys import get_key, set_key

RELOADABLE_PREFIXES: tuple[str, ...] = (
    "freeswitch.default_domain",
    "security.max_failed_attempts",
    "security.failed_attempts_window",
    "security.block_duration",
    "security.whitelist_ttl",
    "security.trusted_networks",
    "security.untrusted_networks",
    "security.esl_allowed_commands",
    "security.auto_whitelist_on_success",
    "security.esl_log_level",
    "security.max_wrong_call_states",
    "security.wrong_call_state_window",
    "security.scanner_user_agents",
    "security.keep_foreign_entries",
    "security.chandaemon.",
    "security.rate_limit.",
    "security.enumeration.",
    "security.toll_fraud.",
    "security.recidive.",
    "logging.level",
)

_INDEX = re.compile(r"\[\d+\]")


def is_reloadable(key_path: str) -> bool:
    """Whether a reload applies this dotted key (list indexes are ignored)."""
    key = _INDEX.sub("", key_path.strip())
    return any(
        key == entry or (entry.endswith(".") and key.startswith(entry))
        or (not entry.endswith(".") and key.startswith(entry + "."))
        for entry in RELOADABLE_PREFIXES
    )


def _leaves(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for name, sub in value.items():
            _leaves(sub, f"{prefix}.{name}" if prefix else str(name), out)
    else:
        out[prefix] = value  # lists are compared whole
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted leaf keys whose values differ, in schema order."""
    before = _leaves(msgspec.to_builtins(old), "", {})
    after = _leaves(msgspec.to_builtins(new), "", {})
    return [k for k in after if before.get(k, _MISSING) != after[k]] + [
        k for k in before if k not in after
    ]


_MISSING = object()


class ReloadPlan(msgspec.Struct, kw_only=True):
    """What a reload does: `apply` is sent to every process, `restart` only reported."""

    apply: list[str]
    restart: list[str]


def plan(old: Config, new: Config) -> ReloadPlan:
    keys = changed_keys(old, new)
    return ReloadPlan(
        apply=[k for k in keys if is_reloadable(k)],
        restart=[k for k in keys if not is_reloadable(k)],
    )


class ReloadOrder(msgspec.Struct, kw_only=True):
    """The request of every role's `reload` op (shared/ops/reload.py): the validated new
    config and the reloadable keys to take from it. Receivers ignore any key that is not
    reloadable."""

    config: Config
    keys: list[str]


def apply_in_place(current: Config, order: ReloadOrder) -> list[str]:
    """Assign the order's reloadable keys onto `current` (same objects); the keys applied."""
    applied: list[str] = []
    for key in order.keys:
        if not is_reloadable(key):
            continue
        try:
            value = get_key(order.config, key)
            before = get_key(current, key)
        except AttributeError:
            continue  # a key this process's schema does not have
        if before != value:
            set_key(current, key, copy.deepcopy(value))
            applied.append(key)
    return applied


def touched(keys: list[str], *prefixes: str) -> bool:
    """Whether any key starts with one of the prefixes (a key equal to one counts)."""
    return any(k == p or k.startswith(p) for k in keys for p in prefixes)
