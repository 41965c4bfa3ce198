"""Per-shard counters (scatter-gather over the workers) and the rate-limit settings."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from fsguard_api.models import (
    FailedEntry,
    MsgspecResponse,
    RateEntry,
    RateLimitSettings,
    WrongCallStateEntry,
)
from fsguard_api.openapi import doc
from fsguard_api.peers import Peers
from fsguard_api.routes_common import merge
from shared.config import Config
from shared.durations import go_duration


def add_counter_routes(app: FastAPI, config: Config, peers: Peers) -> None:
    sec = config.security

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
