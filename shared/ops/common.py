"""Request and reply Structs that more than one role's ops use."""

from __future__ import annotations

import msgspec


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of every role's `ping`: who answered."""

    role: str
    pid: int
    index: int = -1  # a worker's shard index


class LogLevelRequest(msgspec.Struct, frozen=True, kw_only=True):
    level: str


class LogLevel(msgspec.Struct, frozen=True, kw_only=True):
    level: str


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """The request of an op that only records who asked (audit)."""

    actor: str = "control"


# One whitelist entry, the Go REST shape: a worker's learned one (`worker.WHITELIST`) or
# the firewall's manual one. No docstring: it would become the OpenAPI schema's description.
class WhitelistEntry(msgspec.Struct, kw_only=True):
    ip: str
    addedAt: str
    expiresAt: str  # Go zero time "0001-01-01T00:00:00Z" when permanent
    lastSeen: str
    userId: str
    domain: str
    permanent: bool
