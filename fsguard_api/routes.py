"""Routes beyond status/esl/blacklist-list: lists, counters, rate limits, untrusted
patterns, stats, cache and the chanDaemon unban receiver.

Reads that span shards scatter to every worker and merge; writes go to the owner (the
firewall, which broadcasts ListChange to the workers). Every IP in a path or body is
validated first: 400 {"error": "invalid IP address: <ip>"}.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from fsguard_api import access, system, whitelist_net
from fsguard_api.cache import ResponseCache
from fsguard_api.models import CacheCleared, CacheStats, MsgspecResponse
from fsguard_api.openapi import doc
from fsguard_api.peers import Peers
from fsguard_api.routes_blacklist import add_blacklist_routes
from fsguard_api.routes_counters import add_counter_routes
from fsguard_api.routes_esl import add_log_level_routes
from fsguard_api.routes_stats import add_stats_routes
from fsguard_api.routes_untrusted import add_untrusted_routes
from fsguard_api.routes_whitelist import add_whitelist_routes
from shared.config import Config, worker_count


def add_list_routes(app: FastAPI, config: Config, peers: Peers, version: str) -> None:
    """Every route group, in the order the Go program's router lists them (order matters:
    /security/whitelist/batch before /security/whitelist/{ip})."""
    whitelist_net.add_routes(app, peers)  # /security/whitelist/{address}/{prefix}
    add_whitelist_routes(app, config, peers)
    add_blacklist_routes(app, peers)
    add_counter_routes(app, config, peers)
    add_untrusted_routes(app, peers)
    add_log_level_routes(app, config, peers)
    add_stats_routes(app, peers)
    system.add_system_route(app, peers, version, worker_count(config))


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
