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
from fsguard_api.models import FirewallStatus, SecurityStats, convert
from fsguard_api.openapi import doc
from fsguard_api.peers import Peers
from fsguard_api.routes_common import latest, merge
from shared.ops import worker
from shared.ops.base import Empty

STATS_CACHE_KEY = "route:stats:security"


def add_stats_routes(app: FastAPI, peers: Peers) -> None:
    @app.get("/security/stats", responses=doc(SecurityStats))
    async def security_stats() -> Response:
        cache: ResponseCache = app.state.cache
        cached = cache.get(STATS_CACHE_KEY)
        if cached is not None:
            return Response(cached, media_type="application/json")
        fw_stats, fw_status, stats, w_failed, w_wcs, w_regs = await asyncio.gather(
            peers.firewall("stats"),
            peers.firewall("status"),
            peers.ask_workers(worker.STATS, Empty()),
            peers.ask_workers(worker.FAILED, Empty()),
            peers.ask_workers(worker.WRONG_CALL_STATES, Empty()),
            peers.ask_workers(worker.RATE_REGISTRATIONS, Empty()),
        )
        status = convert(fw_status, FirewallStatus, "firewall")
        fails, wcs, regs = merge(w_failed), merge(w_wcs), merge(w_regs)
        fw = fw_stats if isinstance(fw_stats, dict) else {}
        whitelisted = await dropin.whitelist_total(peers)
        result = SecurityStats(
            totalRegistrations=sum(s.registrations for s in stats)
            or sum(e.count for e in regs.values()),
            failedRegistrations=sum(s.failed_registrations for s in stats)
            or sum(e.count for e in fails.values()),
            blockedAttempts=int(fw.get("bans_applied", 0) or 0),
            wrongCallStates=sum(s.wrong_call_states for s in stats)
            or sum(e.count for e in wcs.values()),
            lastRegistrationTime=latest([e.lastRequest for e in regs.values()]),
            lastFailedTime=latest([e.lastAttempt for e in fails.values()]),
            lastWrongCallStateTime=latest([e.lastAttempt for e in wcs.values()]),
            activeWhitelistEntries=whitelisted,
            activeBlacklistEntries=status.blacklistCount,
            reportsSent=int(fw.get("reports_sent", 0) or 0),
            reportsFailed=int(fw.get("reports_failed", 0) or 0),
        )
        encoded = msgspec.json.encode(result)
        cache.put(STATS_CACHE_KEY, encoded)
        return Response(encoded, media_type="application/json")
