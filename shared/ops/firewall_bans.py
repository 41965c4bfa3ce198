"""Request and reply Structs of the firewall's ban ops (status, listings, ban, unban,
stats). The reply Structs that are also REST responses keep the Go field names (camelCase)
and their class names (the API's models.py imports them; openapi.yaml names them)."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from shared.ops.firewall_state import CrowdsecApply, ReconcileResult


class FirewallStatus(msgspec.Struct, kw_only=True):
    """Firewall op "status": counts of non-expired entries."""

    whitelistCount: int
    blacklistCount: int


# A Go blacklist entry; `origin` (fsguard addition) is present only on bans pulled from
# the CrowdSec LAPI ("crowdsec"), so the node's own bans keep the Go shape.
class BlacklistEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    ip: str
    addedAt: str
    expiresAt: str
    reason: str
    failCount: int
    permanent: bool
    origin: str = "local"  # fsguard addition: "crowdsec" for a ban pulled from the LAPI


class BlacklistLookup(msgspec.Struct, kw_only=True):
    ip: str
    blacklisted: bool


class IptablesInfo(msgspec.Struct, kw_only=True):
    chain: str
    ipset: str
    blockedIps: list[str] | None
    count: int
    # fsguard additions (not in the Go program): the active firewall backend ("ipset" or
    # "nftables") and its ruleset as read from the kernel (free-form: the backend's own
    # description of its tables, chains and sets, shown as is).
    backend: str = "ipset"
    ruleset: dict[str, Any] | None = None


class StatusMessage(msgspec.Struct, kw_only=True):
    status: str
    message: str


class IpRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An op about one address (or network) given as text; the handler parses it."""

    ip: str


class BanRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A manual ban. Fields left UNSET are not sent (nor recorded in the audit details)."""

    ip: str
    reason: str = ""
    permanent: bool = False
    duration: float | UnsetType = UNSET  # seconds; UNSET: security.block_duration
    client: str | UnsetType = UNSET  # the API caller's address: never banned
    actor: str = "control"


class UnbanRequest(msgspec.Struct, frozen=True, kw_only=True):
    ip: str
    actor: str = "control"


class BanResult(msgspec.Struct, kw_only=True):
    """Reply of "ban": Go's {status, message} plus the (new or kept) entry."""

    status: str
    message: str
    entry: BlacklistEntry


class HistogramSnapshot(msgspec.Struct, kw_only=True):
    """Cumulative bucket counts: [[le, count], ...]; +Inf is `count`."""

    buckets: list[tuple[float, int]]
    sum: float
    count: int


class ActiveBans(msgspec.Struct, kw_only=True):
    ipv4: int = 0
    ipv6: int = 0


class CrowdsecStats(msgspec.Struct, kw_only=True):
    """Reply of "crowdsec_stats", and part of "stats": the CrowdSec fleet's outbox and pull
    counters (FleetState.fill). None: the store did not answer."""

    crowdsec_active_by_origin: dict[str, int] = msgspec.field(default_factory=dict)
    crowdsec_push_queue_depth: int | None = None
    crowdsec_push_queued: int = 0
    crowdsec_push_dropped: int = 0
    crowdsec_pushed: int = 0
    crowdsec_push_failures: int = 0
    crowdsec_remote_decisions: int | None = None
    crowdsec_applied: int = 0
    crowdsec_removed: int = 0
    crowdsec_refused: int = 0
    crowdsec_invalid: int = 0
    crowdsec_skipped: int = 0
    crowdsec_last_apply: CrowdsecApply | None = None
    crowdsec_stream_errors: int = 0
    crowdsec_last_sync: float = 0.0
    crowdsec_pull_enabled: bool = False
    crowdsec_sync_lag: float | None = None


class FirewallStats(CrowdsecStats, kw_only=True):
    """Reply of "stats": the ban ledger's counters, then those its parts fill in (the
    durable state's, the CrowdSec fleet's: its fields are the inherited `crowdsec_*`). The
    wire keys are flat (the bench reads them)."""

    pid: int
    decisions_received: int = 0
    bans_applied: int = 0
    duplicates: int = 0
    refused_trusted: int = 0
    refused_protected: int = 0
    invalid: int = 0
    decode_errors: int = 0
    batches: int = 0
    last_batch_seconds: float = 0.0
    kernel_errors: int = 0
    kernel_full: int = 0
    pending_bans: int = 0
    retries: int = 0
    expired_pending: int = 0
    drift_checks: int = 0
    drift_repaired: int = 0
    last_drift: int = 0
    store_errors: int = 0
    store_backlog: int = 0
    recidive_escalations: int = 0
    ban_budget_exceeded: int = 0
    ban_budget_over: int = 0
    bans_last_minute: int = 0
    max_bans_per_minute: int = 0
    bad_ban_rows: int = 0
    ban_latency_p50: float | None = None
    ban_latency_p99: float | None = None
    ban_latency_histogram: HistogramSnapshot | None = None
    ban_stage_histograms: dict[str, HistogramSnapshot] = msgspec.field(default_factory=dict)
    batch_seconds_histogram: HistogramSnapshot | None = None
    active_bans: ActiveBans = msgspec.field(default_factory=ActiveBans)
    # the durable state's (Durable.fill): chanDaemon reports (Go names and
    # snake_case), store and acks
    reportsSent: int = 0
    reportsFailed: int = 0
    reportsPending: int = 0
    reports_sent: int = 0
    reports_failed: int = 0
    reports_pending: int = 0
    store_duplicates: int = 0
    acks_sent: int = 0
    acks_dropped: int = 0
    rearmed: int = 0
    store_degraded: int = 0
    last_reconcile: ReconcileResult | None = None
