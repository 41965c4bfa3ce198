"""The firewall's control ops: one request Struct and one reply type each.

The firewall's control socket binds a handler to every op here (its OpTable); the API,
the CLI, the fleet connector and other roles call them with `shared.control.call` /
`acall`. The Structs are in firewall_bans.py, firewall_lists.py and firewall_state.py.
"""

from __future__ import annotations

from typing import Any

from shared.ops.base import Empty, Registry
from shared.ops.common import LogLevel, LogLevelRequest, Ping
from shared.ops.firewall_bans import (
    BanRequest,
    BanResult,
    BlacklistEntry,
    BlacklistLookup,
    CrowdsecStats,
    FirewallStats,
    FirewallStatus,
    IpRequest,
    IptablesInfo,
    StatusMessage,
    UnbanRequest,
)
from shared.ops.firewall_lists import (
    DomainRequest,
    PatternAddRequest,
    PatternRequest,
    UntrustedTest,
    WhitelistAddRequest,
    WhitelistAddResult,
    WhitelistEntry,
    WhitelistLookup,
    WhitelistRemoveRequest,
)
from shared.ops.firewall_state import (
    ApplyRequest,
    CrowdsecApply,
    ImportRequest,
    ImportResult,
    ListsSnapshot,
    OutboxDepth,
    OutboxDue,
    OutboxDueRequest,
    OutboxSettleRequest,
    ReconcileRequest,
    ReconcileResult,
    SnapshotRequest,
)

FIREWALL = Registry("firewall")

PING = FIREWALL.op("ping", Empty, Ping, "who answers: role and pid")
LOG_LEVEL = FIREWALL.op("log_level", LogLevelRequest, LogLevel, "set this process's log level")

# --- bans (fsguard_firewall/control_ops.py) ---------------------------------------------
STATUS = FIREWALL.op("status", Empty, FirewallStatus, "active whitelist and blacklist counts")
BLACKLIST = FIREWALL.op("blacklist", Empty, dict[str, BlacklistEntry], "active bans, Go shape")
BLACKLIST_GET = FIREWALL.op("blacklist_get", IpRequest, BlacklistLookup, "is this IP banned")
IPTABLES = FIREWALL.op("iptables", Empty, IptablesInfo, "the kernel set's members and rules")
BAN = FIREWALL.op("ban", BanRequest, BanResult, "a manual ban (audited)")
UNBAN = FIREWALL.op("unban", UnbanRequest, StatusMessage, "lift a ban (audited); 404 if none")
STATS = FIREWALL.op("stats", Empty, FirewallStats, "counters and histograms (/metrics)")

# --- lists (fsguard_firewall/lists.py, netwhitelist.py) -----------------------------------
WHITELIST = FIREWALL.op("whitelist", Empty, dict[str, WhitelistEntry], "manual whitelist")
WHITELIST_GET = FIREWALL.op("whitelist_get", IpRequest, WhitelistLookup, "is this IP listed")
WHITELIST_ADD = FIREWALL.op(
    "whitelist_add", WhitelistAddRequest, WhitelistAddResult, "whitelist an address or network"
)
WHITELIST_REMOVE = FIREWALL.op(
    "whitelist_remove", WhitelistRemoveRequest, StatusMessage, "remove a manual entry; 404"
)
UNTRUSTED = FIREWALL.op("untrusted", Empty, list[str], "the untrusted patterns")
UNTRUSTED_ADD = FIREWALL.op("untrusted_add", PatternAddRequest, StatusMessage, "add a pattern")
UNTRUSTED_REMOVE = FIREWALL.op(
    "untrusted_remove", PatternRequest, StatusMessage, "remove a pattern; 404 if unknown"
)
UNTRUSTED_TEST = FIREWALL.op("untrusted_test", DomainRequest, UntrustedTest, "match a domain")

# --- durable state (fsguard_firewall/durable.py) -----------------------------------------
RECONCILE = FIREWALL.op("reconcile", ReconcileRequest, ReconcileResult, "kernel <-> store")
DRIFT_CHECK = FIREWALL.op("drift_check", Empty, ReconcileResult, "one drift check now")
LISTS_SNAPSHOT = FIREWALL.op(
    "lists_snapshot", SnapshotRequest, ListsSnapshot, "what a worker mirrors (its shard)"
)
# The export document (bans, whitelist, patterns in the Go entry shapes) is the file
# format of `fsguard bans export`: free-form here, validated by the store on import.
BANS_EXPORT = FIREWALL.op("bans_export", Empty, dict[str, Any], "the durable state as JSON")
BANS_IMPORT = FIREWALL.op("bans_import", ImportRequest, ImportResult, "merge an export")

# --- CrowdSec fleet (fsguard_firewall/fleet.py; the client is fsguard_fleet) --------------
CROWDSEC_OUTBOX_DUE = FIREWALL.op(
    "crowdsec_outbox_due", OutboxDueRequest, OutboxDue, "the oldest outbox items"
)
CROWDSEC_OUTBOX_SETTLE = FIREWALL.op(
    "crowdsec_outbox_settle", OutboxSettleRequest, OutboxDepth, "items sent / failed"
)
CROWDSEC_APPLY = FIREWALL.op("crowdsec_apply", ApplyRequest, CrowdsecApply, "a LAPI stream")
CROWDSEC_STATS = FIREWALL.op("crowdsec_stats", Empty, CrowdsecStats, "the fleet's counters")

# reload (sup17)
from shared.ops.reload import DOC as _RELOAD_DOC  # noqa: E402  (kept with the op it serves)
from shared.ops.reload import FirewallReloaded, ReloadOrder  # noqa: E402

RELOAD = FIREWALL.op("reload", ReloadOrder, FirewallReloaded, _RELOAD_DOC)
