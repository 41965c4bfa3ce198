"""Typed shapes of the REST API (the Go program's, camelCase) and of peer replies.

Attribute names equal JSON keys. Response Structs list exactly the Go field set, so a
peer that sends extra fields cannot leak them: msgspec drops unknown keys on convert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from starlette.responses import Response

T = TypeVar("T")


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


class BlacklistEntry(msgspec.Struct, kw_only=True):
    ip: str
    addedAt: str
    expiresAt: str
    reason: str
    failCount: int
    permanent: bool


class IptablesInfo(msgspec.Struct, kw_only=True):
    chain: str
    ipset: str
    blockedIps: list[str] | None
    count: int


class CommandResult(msgspec.Struct, kw_only=True):
    command: str
    response: str


class StatusMessage(msgspec.Struct, kw_only=True):
    status: str
    message: str


class ErrorBody(msgspec.Struct, kw_only=True):
    error: str


# --- peer replies (the control contract) -----------------------------------------------


class SupervisorEslStats(msgspec.Struct, kw_only=True):
    """Supervisor op "esl_stats": EslStats without eventsProcessed (the workers count it)."""

    connected: bool
    host: str
    port: str | int
    connectionAttempts: int
    connectionErrors: int
    eventsQueued: int
    eventsDropped: int
    workerCount: int
    queueLength: int
    queueCapacity: int
    logLevel: str


class WorkerStats(msgspec.Struct, kw_only=True):
    """Worker op "stats": only the field the API uses."""

    processed: int


class FirewallStatus(msgspec.Struct, kw_only=True):
    """Firewall op "status": counts of non-expired entries."""

    whitelistCount: int
    blacklistCount: int


# --- helpers ------------------------------------------------------------------------------


class PeerReplyInvalid(ValueError):
    """A peer answered ok=true with data that does not fit the contract."""


def convert(data: Any, into: type[T], peer: str) -> T:
    """Validate peer data against a contract type."""
    try:
        return msgspec.convert(data, type=into)
    except msgspec.ValidationError as exc:
        raise PeerReplyInvalid(f"bad reply from {peer}: {exc}") from exc


class MsgspecResponse(Response):
    """JSON response encoded by msgspec (Structs, dicts of Structs, lists ...)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return MsgspecResponse(ErrorBody(error=message), status_code=status, headers=headers)
