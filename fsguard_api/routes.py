"""Routes beyond status/esl/blacklist-list: lists, counters, rate limits, untrusted
patterns, stats, cache and the chanDaemon unban receiver.

Reads that span shards scatter to every worker and merge; writes go to the owner (the
firewall, which broadcasts ListChange to the workers). Every IP in a path or body is
validated first: 400 {"error": "invalid IP address: <ip>"}.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import msgspec
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from fsguard_api import access, dropin, system, whitelist_net
from fsguard_api.cache import ResponseCache
from fsguard_api.models import (
    BatchItemResult,
    BatchResults,
    BlacklistLookup,
    CacheCleared,
    CacheStats,
    FailedEntry,
    FirewallStatus,
    MsgspecResponse,
    RateEntry,
    RateLimitSettings,
    SecurityStats,
    StatusMessage,
    Unblocked,
    UntrustedTest,
    WhitelistEntry,
    WhitelistLookup,
    WrongCallStateEntry,
    convert,
)
from fsguard_api.openapi import doc
from fsguard_api.peers import PeerError, Peers
from fsguard_api.whitelist_net import WhitelistAdded
from shared.config import (
    LOG_LEVELS,
    MAX_BAN_SECONDS,
    Config,
    ConfigError,
    parse_duration,
    worker_count,
)
from shared.durations import go_duration
from shared.iputil import parse_ip, shard_of
from shared.logs import set_level

T = TypeVar("T")

BATCH_LIMIT = 1000
BATCH_CONCURRENCY = 10
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
STATS_CACHE_KEY = "route:stats:security"
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
        None, description='fsguard: entry lifetime ("8h", "7d" or seconds); default '
        "security.whitelist_ttl; ignored when permanent",
    )
    lift_bans: bool = Field(
        False, description="fsguard: for a network, lift the active bans inside it "
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


def merge(parts: Sequence[Any], into: type[T], peer: str) -> dict[str, T]:
    """Union of per-shard maps (shards own disjoint addresses)."""
    out: dict[str, T] = {}
    for part in parts:
        out.update(convert(part, dict[str, into], peer))  # type: ignore[valid-type]
    return out


async def run_batch(
    items: Sequence[T], one: Callable[[T], Awaitable[None]], ip_of: Callable[[T], str]
) -> BatchResults:
    """Run `one` per item, at most BATCH_CONCURRENCY at a time; results in input order."""
    if len(items) > BATCH_LIMIT:
        raise PeerError(f"batch size exceeds limit of {BATCH_LIMIT}", 400)
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def run(item: T) -> BatchItemResult:
        async with gate:
            try:
                await one(item)
            except PeerError as exc:
                return BatchItemResult(ip=ip_of(item), error=str(exc))
            return BatchItemResult(ip=ip_of(item), status="success")

    return BatchResults(results=list(await asyncio.gather(*(run(i) for i in items))))


def _latest(times: Sequence[str]) -> str:
    # RFC 3339 UTC strings with the same layout compare in time order
    return max(times, default=GO_ZERO_TIME)


def stat_sum(stats: Sequence[dict[str, Any]], key: str) -> int:
    return sum(int(s.get(key, 0) or 0) for s in stats)


# --- routes ---------------------------------------------------------------------------------


def add_list_routes(app: FastAPI, config: Config, peers: Peers, version: str) -> None:
    sec = config.security
    workers = worker_count(config)
    whitelist_net.add_routes(app, peers)  # /security/whitelist/{address}/{prefix}

    def audit(request: Request, action: str, subject: str, outcome: str) -> None:
        access.audit(request.scope, action, subject, outcome)

    async def learned(ip: str) -> WhitelistEntry | None:
        """The owner worker's learned whitelist entry for `ip`."""
        shard = shard_of(ip, workers) or 0
        data = convert(await peers.worker(shard, "whitelist"), dict[str, WhitelistEntry], "worker")
        return data.get(ip)

    # --- whitelist -----------------------------------------------------------------

    @app.get("/security/whitelist", responses=doc(dict[str, WhitelistEntry]))
    async def whitelist_list() -> Response:
        manual, per_worker = await asyncio.gather(
            peers.firewall("whitelist"), peers.all_workers("whitelist")
        )
        out = merge(per_worker, WhitelistEntry, "worker")
        out.update(convert(manual, dict[str, WhitelistEntry], "firewall"))
        return MsgspecResponse(out)

    async def whitelist_add(body: WhitelistBody) -> WhitelistAdded:
        ip = whitelist_net.checked_target(body.ip)
        args = {"ip": ip, "userId": body.userId, "domain": body.domain, "permanent": body.permanent,
                "ttl": seconds_of(body.ttl), "lift_bans": body.lift_bans}  # fmt: skip
        data = await peers.firewall("whitelist_add", args)
        return convert(data, WhitelistAdded, "firewall")

    @app.post("/security/whitelist", responses=doc(WhitelistAdded, body=True))
    async def whitelist_post(request: Request, body: WhitelistBody) -> Response:
        result = await whitelist_add(body)
        audit(request, "whitelist_add", body.ip, "ok")
        if "/" not in whitelist_net.checked_target(body.ip):  # Go's shape for an address
            result.bansInside = result.liftedBans = msgspec.UNSET
        return MsgspecResponse(result)

    @app.post("/security/whitelist/batch", responses=doc(BatchResults, body=True))
    async def whitelist_batch(request: Request, body: list[WhitelistBody]) -> Response:
        async def one(item: WhitelistBody) -> None:
            await whitelist_add(item)

        results = await run_batch(body, one, lambda item: item.ip)
        audit(request, "whitelist_batch", f"{len(body)} items", "ok")
        return MsgspecResponse(results)

    @app.get("/security/whitelist/{ip}", responses=doc(WhitelistLookup, 400))
    async def whitelist_get(ip: str) -> Response:
        addr = checked_ip(ip)
        data = await peers.firewall("whitelist_get", {"ip": addr})
        found = convert(data, WhitelistLookup, "firewall")
        result = WhitelistLookup(ip=ip, whitelisted=found.whitelisted)
        if found.whitelisted:
            result.userId, result.domain = found.userId, found.domain
        else:
            entry = await learned(addr)
            if entry is not None:
                result.whitelisted, result.userId, result.domain = True, entry.userId, entry.domain
        parsed = parse_ip(addr)
        trusted = [ipaddress.ip_network(c.strip(), strict=False) for c in sec.trusted_networks]
        for net in trusted:  # read per request: a reload changes the list
            if parsed.version == net.version and parsed in net:
                result.trustedNetwork = str(net)
                if not result.whitelisted:
                    result.whitelisted, result.userId, result.domain = True, "", ""
                break
        return MsgspecResponse(result)

    @app.delete("/security/whitelist/{ip}", responses=doc(StatusMessage, 400, 404))
    async def whitelist_delete(request: Request, ip: str) -> Response:
        addr = checked_ip(ip)
        was_learned = await learned(addr) is not None
        data = await peers.firewall("whitelist_remove", {"ip": addr, "learned": was_learned})
        audit(request, "whitelist_remove", addr, "ok")
        return MsgspecResponse(convert(data, StatusMessage, "firewall"))

    # --- blacklist --------------------------------------------------------------------

    async def ban(body: BlacklistBody, request: Request) -> StatusMessage:
        ip = checked_ip(body.ip)
        args: dict[str, Any] = {"ip": ip, "reason": body.reason, "permanent": body.permanent}
        client = access.client_host(request.scope)
        if client:
            args["client"] = client  # the firewall never bans the caller's own address
        seconds = None if body.permanent else seconds_of(body.duration)
        if seconds is not None:
            args["duration"] = seconds
        data = await peers.firewall("ban", args)
        return convert(data, StatusMessage, "firewall")

    @app.post("/security/blacklist", responses=doc(StatusMessage, body=True))
    async def blacklist_post(request: Request, body: BlacklistBody) -> Response:
        try:
            result = await ban(body, request)
        except PeerError as exc:
            audit(request, "blacklist_add", body.ip, f"failed: {exc.status} {exc}")
            raise
        audit(request, "blacklist_add", body.ip, "ok")
        return MsgspecResponse(StatusMessage(status=result.status, message=result.message))

    @app.post("/security/blacklist/batch", responses=doc(BatchResults, body=True))
    async def blacklist_batch(request: Request, body: list[BlacklistBody]) -> Response:
        async def one(item: BlacklistBody) -> None:
            await ban(item, request)

        results = await run_batch(body, one, lambda item: item.ip)
        audit(request, "blacklist_batch", f"{len(body)} items", "ok")
        return MsgspecResponse(results)

    @app.get("/security/blacklist/{ip}", responses=doc(BlacklistLookup, 400))
    async def blacklist_get(ip: str) -> Response:
        addr = checked_ip(ip)
        data = convert(
            await peers.firewall("blacklist_get", {"ip": addr}), BlacklistLookup, "firewall"
        )
        return MsgspecResponse(BlacklistLookup(ip=ip, blacklisted=data.blacklisted))

    async def unban(request: Request, ip: str, action: str) -> StatusMessage:
        addr = checked_ip(ip)
        try:
            data = await peers.firewall("unban", {"ip": addr})
        except PeerError as exc:
            audit(request, action, addr, f"failed: {exc.status} {exc}")
            raise
        audit(request, action, addr, "ok")
        return convert(data, StatusMessage, "firewall")

    @app.delete("/security/blacklist/{ip}", responses=doc(StatusMessage, 400, 404))
    async def blacklist_delete(request: Request, ip: str) -> Response:
        return MsgspecResponse(await unban(request, ip, "blacklist_remove"))

    @app.delete("/api/v1/ips/{ip}/block", responses=doc(Unblocked, 400))
    async def unblock(request: Request, ip: str) -> Response:
        """chanDaemon's unban fan-out: idempotent, 200 even when the IP was not banned."""
        try:
            await unban(request, ip, "unblock")
        except PeerError as exc:
            if exc.status != 404:
                raise
        return MsgspecResponse(Unblocked(ip=ip, banned=False, message="IP unblocked successfully"))

    # --- per-shard counters (scatter-gather) ----------------------------------------------

    @app.get("/security/failed", responses=doc(dict[str, FailedEntry]))
    async def failed() -> Response:
        return MsgspecResponse(merge(await peers.all_workers("failed"), FailedEntry, "worker"))

    @app.get("/security/wrong-call-states", responses=doc(dict[str, WrongCallStateEntry]))
    async def wrong_call_states() -> Response:
        parts = await peers.all_workers("wrong_call_states")
        return MsgspecResponse(merge(parts, WrongCallStateEntry, "worker"))

    @app.get("/security/rate-limit", responses=doc(RateLimitSettings, peer=False))
    async def rate_limit() -> Response:
        rl = sec.rate_limit
        return MsgspecResponse(
            RateLimitSettings(
                enabled=rl.enabled,
                callRateLimit=rl.call_rate_limit,
                callRateInterval=go_duration(rl.call_rate_interval),
                registrationLimit=rl.registration_limit,
                registrationWindow=go_duration(rl.registration_window),
                autoBlockOnExceed=rl.auto_block_on_exceed,
                blockDuration=go_duration(rl.block_duration),
                whitelistBypass=rl.whitelist_bypass,
                cleanupInterval=go_duration(rl.cleanup_interval),
            )
        )

    @app.get("/security/rate-limit/calls", responses=doc(dict[str, RateEntry]))
    async def rate_calls() -> Response:
        return MsgspecResponse(merge(await peers.all_workers("rate_calls"), RateEntry, "worker"))

    @app.get("/security/rate-limit/registrations", responses=doc(dict[str, RateEntry]))
    async def rate_registrations() -> Response:
        parts = await peers.all_workers("rate_registrations")
        return MsgspecResponse(merge(parts, RateEntry, "worker"))

    # --- untrusted patterns -------------------------------------------------------------

    @app.get("/security/untrusted-networks", responses=doc(list[str]))
    async def untrusted_list() -> Response:
        return MsgspecResponse(convert(await peers.firewall("untrusted"), list[str], "firewall"))

    @app.post("/security/untrusted-networks", responses=doc(StatusMessage, body=True))
    async def untrusted_add(request: Request, body: PatternBody) -> Response:
        data = await peers.firewall(
            "untrusted_add", {"pattern": body.pattern, "force": body.force}
        )
        audit(request, "untrusted_add", body.pattern, "ok")
        return MsgspecResponse(convert(data, StatusMessage, "firewall"))

    @app.delete("/security/untrusted-networks/{pattern:pattern}", responses=doc(StatusMessage, 404))
    async def untrusted_delete(request: Request, pattern: str) -> Response:
        data = await peers.firewall("untrusted_remove", {"pattern": pattern})
        audit(request, "untrusted_remove", pattern, "ok")
        return MsgspecResponse(convert(data, StatusMessage, "firewall"))

    @app.get("/security/untrusted-networks/test/{domain:path}", responses=doc(UntrustedTest))
    async def untrusted_test(domain: str) -> Response:
        data = await peers.firewall("untrusted_test", {"domain": domain})
        return MsgspecResponse(convert(data, UntrustedTest, "firewall"))

    # --- log level (every process) ---------------------------------------------------------

    @app.post("/security/esl/log-level", responses=doc(StatusMessage, body=True))
    async def log_level(request: Request, body: LogLevelBody) -> Response:
        args = {"level": body.level}
        results = await asyncio.gather(
            peers.supervisor("log_level", args),
            peers.firewall("log_level", args),
            *(peers.worker(i, "log_level", args) for i in range(workers)),
            return_exceptions=True,
        )
        set_level(body.level)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            audit(request, "log_level", body.level, f"partial: {failures[0]}")
            first = failures[0]
            if isinstance(first, PeerError):
                raise PeerError(f"log level not applied everywhere: {first}", first.status)
            raise first
        audit(request, "log_level", body.level, "ok")
        return MsgspecResponse(
            StatusMessage(status="success", message=f"ESL log level set to {body.level}")
        )

    # --- stats ------------------------------------------------------------------------------

    @app.get("/security/stats", responses=doc(SecurityStats))
    async def security_stats() -> Response:
        cache: ResponseCache = app.state.cache
        cached = cache.get(STATS_CACHE_KEY)
        if cached is not None:
            return Response(cached, media_type="application/json")
        fw_stats, fw_status, w_stats, w_failed, w_wcs, w_regs = await asyncio.gather(
            peers.firewall("stats"),
            peers.firewall("status"),
            peers.all_workers("stats"),
            peers.all_workers("failed"),
            peers.all_workers("wrong_call_states"),
            peers.all_workers("rate_registrations"),
        )
        status = convert(fw_status, FirewallStatus, "firewall")
        fails = merge(w_failed, FailedEntry, "worker")
        wcs = merge(w_wcs, WrongCallStateEntry, "worker")
        regs = merge(w_regs, RateEntry, "worker")
        stats = [s for s in w_stats if isinstance(s, dict)]
        fw = fw_stats if isinstance(fw_stats, dict) else {}
        whitelisted = await dropin.whitelist_total(peers)
        result = SecurityStats(
            totalRegistrations=stat_sum(stats, "registrations")
            or sum(e.count for e in regs.values()),
            failedRegistrations=stat_sum(stats, "failed_registrations")
            or sum(e.count for e in fails.values()),
            blockedAttempts=int(fw.get("bans_applied", 0) or 0),
            wrongCallStates=stat_sum(stats, "wrong_call_states")
            or sum(e.count for e in wcs.values()),
            lastRegistrationTime=_latest([e.lastRequest for e in regs.values()]),
            lastFailedTime=_latest([e.lastAttempt for e in fails.values()]),
            lastWrongCallStateTime=_latest([e.lastAttempt for e in wcs.values()]),
            activeWhitelistEntries=whitelisted,
            activeBlacklistEntries=status.blacklistCount,
            reportsSent=int(fw.get("reports_sent", 0) or 0),
            reportsFailed=int(fw.get("reports_failed", 0) or 0),
        )
        encoded = msgspec.json.encode(result)
        cache.put(STATS_CACHE_KEY, encoded)
        return Response(encoded, media_type="application/json")

    system.add_system_route(app, peers, version, workers)


def add_cache_routes(app: FastAPI) -> None:
    @app.get("/cache/stats", responses=doc(CacheStats, peer=False))
    async def cache_stats() -> Response:
        cache: ResponseCache = app.state.cache
        return MsgspecResponse(cache.stats())

    @app.post("/cache/security/clear", responses=doc(CacheCleared, peer=False))
    async def cache_clear(request: Request) -> Response:
        cache: ResponseCache = app.state.cache
        cache.clear()
        access.audit(request.scope, "cache_clear", "", "ok")
        return MsgspecResponse(CacheCleared(status="security cache cleared"))
