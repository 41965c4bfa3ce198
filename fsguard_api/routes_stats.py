"""GET /security/stats: the Go program's totals, from the firewall and every worker
(cached for cache.security_ttl).
"""

from __future__ import annotations

import asyncio

import msgspec
from fastapi import FastAPI
from starlette.responses import Response

from fsguard_api import dropin
from fsguard_api.cache import ResponseCache
from fsguard_api.models import (
    FailedEntry,
    RateEntry,
    SecurityStats,
    WrongCallStateEntry,
)
from fsguard_api.openapi import doc
from fsguard_api.peers import Peers
from fsguard_api.routes_common import latest, merge, stat_sum
from shared.ops import firewall as fw_ops
from shared.ops.base import Empty

STATS_CACHE_KEY = "route:stats:security"


def add_stats_routes(app: FastAPI, peers: Peers) -> None:
    @app.get("/security/stats", responses=doc(SecurityStats))
    async def security_stats() -> Response:
        cache: ResponseCache = app.state.cache
        cached = cache.get(STATS_CACHE_KEY)
        if cached is not None:
            return Response(cached, media_type="application/json")
        fw_stats, fw_status, w_stats, w_failed, w_wcs, w_regs = await asyncio.gather(
            peers.ask(fw_ops.STATS, Empty()),
            peers.ask(fw_ops.STATUS, Empty()),
            peers.all_workers("stats"),
            peers.all_workers("failed"),
            peers.all_workers("wrong_call_states"),
            peers.all_workers("rate_registrations"),
        )
        fails = merge(w_failed, FailedEntry, "worker")
        wcs = merge(w_wcs, WrongCallStateEntry, "worker")
        regs = merge(w_regs, RateEntry, "worker")
        stats = [s for s in w_stats if isinstance(s, dict)]
        whitelisted = await dropin.whitelist_total(peers)
        result = SecurityStats(
            totalRegistrations=stat_sum(stats, "registrations")
            or sum(e.count for e in regs.values()),
            failedRegistrations=stat_sum(stats, "failed_registrations")
            or sum(e.count for e in fails.values()),
            blockedAttempts=fw_stats.bans_applied,
            wrongCallStates=stat_sum(stats, "wrong_call_states")
            or sum(e.count for e in wcs.values()),
            lastRegistrationTime=latest([e.lastRequest for e in regs.values()]),
            lastFailedTime=latest([e.lastAttempt for e in fails.values()]),
            lastWrongCallStateTime=latest([e.lastAttempt for e in wcs.values()]),
            activeWhitelistEntries=whitelisted,
            activeBlacklistEntries=fw_status.blacklistCount,
            reportsSent=fw_stats.reports_sent,
            reportsFailed=fw_stats.reports_failed,
        )
        encoded = msgspec.json.encode(result)
        cache.put(STATS_CACHE_KEY, encoded)
        return Response(encoded, media_type="application/json")
