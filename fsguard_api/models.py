"""Typed shapes of the REST API (the Go program's, camelCase) and of peer replies.

Attribute names equal JSON keys. Response Structs list exactly the Go field set, so a
peer that sends extra fields cannot leak them: msgspec drops unknown keys on convert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

# Peer replies that are also REST shapes live with their ops in shared/ops (same class
# names, so the OpenAPI document does not change); the routes import them from here.
from shared.ops.common import WhitelistEntry
from shared.ops.firewall_bans import (
    BlacklistEntry,
    BlacklistLookup,
    FirewallStatus,
    IptablesInfo,
    StatusMessage,
)
from shared.ops.firewall_lists import UntrustedTest, WhitelistLookup
from shared.ops.supervisor import CommandResult
from shared.ops.worker import FailedEntry, RateEntry, SimulatedDecision, WrongCallStateEntry

__all__ = [
    "BlacklistEntry", "BlacklistLookup", "CommandResult", "FailedEntry", "FirewallStatus",
    "IptablesInfo", "RateEntry", "SimulatedDecision", "StatusMessage", "UntrustedTest",
    "WhitelistEntry", "WhitelistLookup", "WrongCallStateEntry",
]  # fmt: skip


# --- responses ----------------------------------------------------------------------


class Health(msgspec.Struct, kw_only=True):
    status: str
    version: str


class SecurityStatus(msgspec.Struct, kw_only=True):
    enabled: bool
    autoBlock: bool
    whitelistCount: int
    blacklistCount: int
    eslConnected: bool
    eslHost: str
    eslPort: str  # a string in Go (config.Security.ESLPort)
    # fsguard addition (issue 12): failed ESL hardening checks, check -> message
    eslWarnings: dict[str, str] = msgspec.field(default_factory=dict)


class EslStats(msgspec.Struct, kw_only=True):
    """GET /security/esl (Go GetESLStats, facts §1.5)."""

    connected: bool
    host: str
    port: str  # a string in Go
    connectionAttempts: int
    connectionErrors: int
    eventsProcessed: int
    eventsQueued: int
    eventsDropped: int
    logLevel: str
    workerCount: int
    queueLength: int
    queueCapacity: int


class ErrorBody(msgspec.Struct, kw_only=True):
    error: str


class BatchItemResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One batch item: {"ip","status":"success"} or {"ip","error"} (Go shapes)."""

    ip: str
    status: str | msgspec.UnsetType = msgspec.UNSET
    error: str | msgspec.UnsetType = msgspec.UNSET


class BatchResults(msgspec.Struct, kw_only=True):
    results: list[BatchItemResult]


class RateLimitSettings(msgspec.Struct, kw_only=True):
    """GET /security/rate-limit; durations are Go duration strings ("1m0s")."""

    enabled: bool
    callRateLimit: int
    callRateInterval: str
    registrationLimit: int
    registrationWindow: str
    autoBlockOnExceed: bool
    blockDuration: str
    whitelistBypass: bool
    cleanupInterval: str


class Unblocked(msgspec.Struct, kw_only=True):
    ip: str
    banned: bool
    message: str


class SecurityStats(msgspec.Struct, kw_only=True):
    totalRegistrations: int
    failedRegistrations: int
    blockedAttempts: int
    wrongCallStates: int
    lastRegistrationTime: str
    lastFailedTime: str
    lastWrongCallStateTime: str
    activeWhitelistEntries: int
    activeBlacklistEntries: int
    reportsSent: int
    reportsFailed: int


class CacheSecurityStats(msgspec.Struct, kw_only=True):
    hits: int
    misses: int
    entries: int
    ttl: str


class CacheOperations(msgspec.Struct, kw_only=True):
    writes: int
    reads: int
    misses: int
    deletes: int


class CacheStats(msgspec.Struct, kw_only=True, omit_defaults=True):
    """{"enabled": false} alone when the cache is disabled."""

    enabled: bool
    security: CacheSecurityStats | msgspec.UnsetType = msgspec.UNSET
    operations: CacheOperations | msgspec.UnsetType = msgspec.UNSET


class CacheCleared(msgspec.Struct, kw_only=True):
    status: str


class ProcessStats(msgspec.Struct, kw_only=True):
    """One process of the fsguard tree, read from /proc."""

    name: str
    role: str
    pid: int | None
    running: bool
    rssMb: float
    cpuSeconds: float
    cpuPercent: float  # average over the process's lifetime
    threads: int
    uptimeSeconds: float
    restarts: int


class SystemMemory(msgspec.Struct, kw_only=True):
    """Go's keys with the nearest Python values (docs/api.md), then fsguard's rssMb."""

    allocMb: int  # Go: live heap. Here: resident memory of the whole tree
    totalAllocMb: int  # Go: bytes ever allocated. Here: sum of each process's peak RSS
    sysMb: int  # Go: memory from the OS. Here: resident memory of the whole tree
    gcRuns: int  # Go: GC cycles. Here: the API process's garbage-collector runs
    heapObjects: int  # Go: live heap objects. Here: the API process's allocated blocks
    rssMb: int  # sum over the process tree


class SystemStats(msgspec.Struct, kw_only=True):
    """GET /system/stats: the Go program's keys (goroutines, memory.*) with the nearest
    Python values, next to fsguard's own; see docs/api.md for the mapping."""

    version: str
    goroutines: int  # Go: goroutines. Here: threads of every process in the tree
    pythonVersion: str
    uptimeSeconds: float
    workerCount: int
    cpuCores: int
    processCount: int
    threads: int
    memory: SystemMemory
    processes: list[ProcessStats]


class MsgspecResponse(Response):
    """JSON response encoded by msgspec (Structs, dicts of Structs, lists ...)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return MsgspecResponse(ErrorBody(error=message), status_code=status, headers=headers)
