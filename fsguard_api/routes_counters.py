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
from shared.ops import worker
from shared.ops.base import Empty


def add_counter_routes(app: FastAPI, config: Config, peers: Peers) -> None:
    sec = config.security

    @app.get("/security/failed", responses=doc(dict[str, FailedEntry]))
    async def failed() -> Response:
        parts = await peers.ask_workers(worker.FAILED, Empty())
        return MsgspecResponse(merge(parts))

    @app.get("/security/wrong-call-states", responses=doc(dict[str, WrongCallStateEntry]))
    async def wrong_call_states() -> Response:
        parts = await peers.ask_workers(worker.WRONG_CALL_STATES, Empty())
        return MsgspecResponse(merge(parts))

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
        parts = await peers.ask_workers(worker.RATE_CALLS, Empty())
        return MsgspecResponse(merge(parts))

    @app.get("/security/rate-limit/registrations", responses=doc(dict[str, RateEntry]))
    async def rate_registrations() -> Response:
        parts = await peers.ask_workers(worker.RATE_REGISTRATIONS, Empty())
        return MsgspecResponse(merge(parts))
