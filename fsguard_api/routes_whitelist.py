"""/security/whitelist routes: the firewall's manual entries merged with the workers'
learned ones; trusted networks count as whitelisted.
"""

from __future__ import annotations

import asyncio
import ipaddress

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from fsguard_api import whitelist_net
from fsguard_api.models import (
    BatchResults,
    MsgspecResponse,
    StatusMessage,
    WhitelistEntry,
    WhitelistLookup,
    convert,
)
from fsguard_api.openapi import doc
from fsguard_api.peers import Peers
from fsguard_api.routes_common import WhitelistBody, audit, checked_ip, merge, run_batch, seconds_of
from fsguard_api.whitelist_net import WhitelistAdded
from shared.config import Config, worker_count
from shared.iputil import parse_ip, shard_of
from shared.ops import worker
from shared.ops.base import Empty


def add_whitelist_routes(app: FastAPI, config: Config, peers: Peers) -> None:
    sec = config.security
    workers = worker_count(config)

    async def learned(ip: str) -> WhitelistEntry | None:
        """The owner worker's learned whitelist entry for `ip`."""
        shard = shard_of(ip, workers) or 0
        return (await peers.ask(worker.WHITELIST, Empty(), shard)).get(ip)

    # --- whitelist -----------------------------------------------------------------

    @app.get("/security/whitelist", responses=doc(dict[str, WhitelistEntry]))
    async def whitelist_list() -> Response:
        manual, per_worker = await asyncio.gather(
            peers.firewall("whitelist"), peers.ask_workers(worker.WHITELIST, Empty())
        )
        out = merge(per_worker)
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
        return await run_batch(request, "whitelist_batch", body, whitelist_add)

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
