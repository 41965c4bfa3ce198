"""Shared pieces of the API routes: request bodies, IP and duration checks, shard
merging, batches, audit records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar

from fastapi import Request
from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from fsguard_api import access
from fsguard_api.models import BatchItemResult, BatchResults, MsgspecResponse
from fsguard_api.peers import PeerError
from shared.config import LOG_LEVELS, MAX_BAN_SECONDS, ConfigError, parse_duration
from shared.iputil import parse_ip

T = TypeVar("T")

BATCH_LIMIT = 1000
BATCH_CONCURRENCY = 10
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
LogLevel = Literal["error", "warning", "info", "debug", "trace"]
assert set(LOG_LEVELS) == {"error", "warning", "info", "debug", "trace"}


# --- request bodies -------------------------------------------------------------------


class WhitelistBody(BaseModel):
    ip: str = Field(
        min_length=1, description='IPv4 or IPv6 address, or network ("198.51.100.0/24")'
    )
    userId: str = ""
    domain: str = Field("", description="empty: freeswitch.default_domain")
    permanent: bool = False
    ttl: str | float | None = Field(
        None,
        description='fsguard: entry lifetime ("8h", "7d" or seconds); default '
        "security.whitelist_ttl; ignored when permanent",
    )
    lift_bans: bool = Field(
        False,
        description="fsguard: for a network, lift the active bans inside it "
        "(they are listed in bansInside otherwise)",
    )


class BlacklistBody(BaseModel):
    ip: str = Field(min_length=1, description="IPv4 or IPv6 address")
    reason: str = ""
    permanent: bool = False
    duration: str | float | None = Field(
        None,
        description='ban length: Go duration ("90m", "1h30m") or seconds; '
        "default security.block_duration; ignored when permanent",
    )


class LogLevelBody(BaseModel):
    level: LogLevel

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class PatternBody(BaseModel):
    pattern: str = Field(min_length=1, max_length=253)
    force: bool = Field(
        False, description="accept a very broad address prefix (shorter than /8 or /32)"
    )


# --- helpers ---------------------------------------------------------------------------


def checked_ip(text: str) -> str:
    """The normalized address, or a 400 with the Go message."""
    try:
        return str(parse_ip(text))
    except ValueError:
        raise PeerError(f"invalid IP address: {text}", 400) from None


def seconds_of(value: str | float | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value, "duration")
    except ConfigError:
        raise PeerError(f"invalid duration: {value!r}", 400) from None
    if not 0 < seconds <= MAX_BAN_SECONDS:
        raise PeerError(
            f"invalid duration: {value!r}: must be positive and at most {MAX_BAN_SECONDS} "
            "seconds (100 years); use permanent for longer",
            400,
        )
    return seconds


def merge(parts: Iterable[Mapping[str, T]]) -> dict[str, T]:
    """Union of per-shard maps (shards own disjoint addresses)."""
    out: dict[str, T] = {}
    for part in parts:
        out.update(part)
    return out


class HasIp(Protocol):
    """A batch item: a request body naming one address."""

    @property
    def ip(self) -> str: ...


B = TypeVar("B", bound=HasIp)


async def run_batch(
    request: Request, action: str, items: Sequence[B], one: Callable[[B], Awaitable[object]]
) -> Response:
    """Run `one` per item, at most BATCH_CONCURRENCY at a time; results in input order,
    one audit record for the batch."""
    if len(items) > BATCH_LIMIT:
        raise PeerError(f"batch size exceeds limit of {BATCH_LIMIT}", 400)
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def run(item: B) -> BatchItemResult:
        async with gate:
            try:
                await one(item)
            except PeerError as exc:
                return BatchItemResult(ip=item.ip, error=str(exc))
            return BatchItemResult(ip=item.ip, status="success")

    results = BatchResults(results=list(await asyncio.gather(*(run(i) for i in items))))
    audit(request, action, f"{len(items)} items", "ok")
    return MsgspecResponse(results)


def latest(times: Sequence[str]) -> str:
    # RFC 3339 UTC strings with the same layout compare in time order
    return max(times, default=GO_ZERO_TIME)


def audit(request: Request, action: str, subject: str, outcome: str) -> None:
    """One audit record for a write made through the API."""
    access.audit(request.scope, action, subject, outcome)
