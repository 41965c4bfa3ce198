"""Details that make fsguard a drop-in for the Go API (issue 14 §8).

- `whitelist_total`: the whitelist's size as the Go program counts it, manual and learned
  entries together (the union of what GET /security/whitelist lists), for
  /security/status and /security/stats alike.
- `allowed_methods`: a 405's `Allow` header names every method of the path, not only the
  first route Starlette happened to match.
- The `pattern` path convertor: DELETE /security/untrusted-networks/{pattern} takes CIDRs
  (with a `/`) but never `test/...`, which is the GET test route's path; so neither a
  request nor an `Allow` header mixes the two.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Match
from starlette.types import Scope

from fsguard_api.models import WhitelistEntry, convert
from fsguard_api.peers import Peers
from shared.ops import worker
from shared.ops.base import Empty


class PatternConvertor(Convertor[str]):
    regex = r"(?!test/)[^\n]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("pattern", PatternConvertor())


async def whitelist_total(peers: Peers) -> int:
    """Distinct whitelisted addresses: the firewall's manual entries and every worker's
    registration-learned entries (an address in both counts once)."""
    manual, per_worker = await asyncio.gather(
        peers.firewall("whitelist"), peers.ask_workers(worker.WHITELIST, Empty())
    )
    keys = set(convert(manual, dict[str, WhitelistEntry], "firewall"))
    for part in per_worker:
        keys.update(part)
    return len(keys)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this request's path, sorted."""
    methods: set[str] = set()
    probe = {**scope, "type": "http"}
    for route in app.router.routes:
        route_methods = getattr(route, "methods", None)
        if not route_methods:
            continue
        match, _ = route.matches(probe)
        if match in (Match.FULL, Match.PARTIAL):
            methods.update(route_methods)
    return sorted(methods)
