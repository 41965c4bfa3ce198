"""The worker's control ops: one request Struct and one reply type each.

The worker's control socket binds a handler to every op here (its OpTable); the API,
the CLI and other roles call them with `shared.control.call` / `acall`. The snapshot
entries are also the Go REST shapes (`fsguard_api.models` re-exports them under the
same names, so the OpenAPI document does not change): their docstrings and field order
are part of that document.
"""

from __future__ import annotations

import msgspec

from shared.ops.base import Empty, Registry
from shared.ops.common import LogLevel, LogLevelRequest, Ping, WhitelistEntry

WORKER = Registry("worker")

# --- snapshot entries (the Go REST shapes) --------------------------------------------


class FailedEntry(msgspec.Struct, kw_only=True):
    count: int
    firstAttempt: str
    lastAttempt: str
    userIds: list[str] | None
    domains: list[str] | None


class WrongCallStateEntry(msgspec.Struct, kw_only=True):
    count: int
    firstAttempt: str
    lastAttempt: str
    userIds: list[str] | None


class RateEntry(msgspec.Struct, kw_only=True):
    count: int
    firstRequest: str
    lastRequest: str
    userIds: list[str] | None
    domains: list[str] | None


class SimulatedDecision(msgspec.Struct, kw_only=True):
    """A decision of a rule in simulate mode (never applied): GET /security/simulated."""

    ip: str
    rule: str
    reason: str
    duration: float
    user: str = ""
    userAgent: str = ""
    count: int = 0
    time: str = ""
    simulated: bool = True


# --- stats -------------------------------------------------------------------------------


class WorkerStats(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of `stats`: the engine's counters, the worker loop's and its firewall link's.

    Every counter of `DetectionEngine.stats()` is a field here (tests/test_worker_ops.py
    checks it), so a counter added to the engine without a field here fails a test
    instead of silently vanishing from the reply.
    """

    index: int
    pid: int
    # the worker loop
    processed: int = 0  # events handed to the engine
    batches: int = 0
    bad_batches: int = 0
    decisions_sent: int = 0
    kills_sent: int = 0
    outbox_dropped: int = 0
    events_by_name: dict[str, int] = msgspec.field(default_factory=dict)  # bounded labels
    decisions_by_rule: dict[str, int] = msgspec.field(default_factory=dict)
    simulated_by_rule: dict[str, int] = msgspec.field(default_factory=dict)
    spoofing_by_rule: dict[str, int] = msgspec.field(default_factory=dict)
    # the engine
    irrelevant: int = 0
    decode_errors: int = 0
    forged: int = 0
    ignored: int = 0
    trusted_skipped: int = 0
    decisions: int = 0
    suppressed: int = 0
    kills: int = 0
    evictions: int = 0
    expired: int = 0
    whitelist_learned: int = 0
    list_changes: int = 0
    list_changes_ignored: int = 0
    internal_errors: int = 0
    registrations: int = 0  # the Go /security/stats totals (untrusted sources only)
    failed_registrations: int = 0
    wrong_call_states: int = 0
    spoofing_suspected: int = 0
    simulated: int = 0
    extension_scan_calls: int = 0
    invalid_utf8: int = 0
    decode_salvaged: int = 0
    decode_refused: int = 0
    tracked_ips: int = 0
    ban_records: int = 0
    active_bans: int = 0
    whitelisted: int = 0
    manual_whitelist: int = 0
    whitelist_networks: int = 0
    whitelist_network_skipped: int = 0
    bad_config_entries: int = 0
    protected_registered: int = 0
    protected_gateways: int = 0
    # the firewall link (fsguard_workers/outbox.py)
    decisions_unacked: int = 0
    decisions_acked: int = 0
    decisions_nacked: int = 0
    decisions_resent: int = 0
    decisions_unacked_overflow: int = 0
    list_snapshots: int = 0
    firewall_starts_seen: int = 0


# --- gateways ------------------------------------------------------------------------------


class GatewaysRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The FreeSWITCH gateways' addresses (the worker parses them; at most 4096 are kept)."""

    addresses: list[str]


class GatewaysSet(msgspec.Struct, frozen=True, kw_only=True):
    protected: int  # how many of the addresses parsed


# --- the ops ---------------------------------------------------------------------------------

PING = WORKER.op("ping", Empty, Ping, "who answers: role, pid and shard index")
LOG_LEVEL = WORKER.op("log_level", LogLevelRequest, LogLevel, "set this process's log level")
STATS = WORKER.op("stats", Empty, WorkerStats, "this shard's counters (metrics, /security/*)")
FAILED = WORKER.op(
    "failed", Empty, dict[str, FailedEntry], "ip -> failed registrations in the window"
)
WRONG_CALL_STATES = WORKER.op(
    "wrong_call_states", Empty, dict[str, WrongCallStateEntry], "ip -> wrong call states"
)
RATE_CALLS = WORKER.op("rate_calls", Empty, dict[str, RateEntry], "ip -> calls in the window")
RATE_REGISTRATIONS = WORKER.op(
    "rate_registrations", Empty, dict[str, RateEntry], "ip -> registrations in the window"
)
WHITELIST = WORKER.op(
    "whitelist", Empty, dict[str, WhitelistEntry], "ip -> registration-learned whitelist entry"
)
SIMULATED = WORKER.op(
    "simulated", Empty, list[SimulatedDecision], "recent simulated decisions, oldest first"
)
GATEWAYS = WORKER.op(
    "gateways", GatewaysRequest, GatewaysSet, "the gateways' addresses (protected sources)"
)


# reload (sup17)
from shared.ops.reload import DOC as _RELOAD_DOC  # noqa: E402  (kept with the op it serves)
from shared.ops.reload import Reloaded, ReloadOrder  # noqa: E402

RELOAD = WORKER.op("reload", ReloadOrder, Reloaded, _RELOAD_DOC)
