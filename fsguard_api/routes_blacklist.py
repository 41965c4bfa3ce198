"""/security/blacklist routes and chanDaemon's unban receiver (/api/v1/ips/{ip}/block)."""

from __future__ import annotations

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from fsguard_api import access
from fsguard_api.models import (
    BatchResults,
    BlacklistLookup,
    MsgspecResponse,
    StatusMessage,
    Unblocked,
)
from fsguard_api.openapi import doc
from fsguard_api.peers import PeerError, Peers
from fsguard_api.routes_common import BlacklistBody, audit, checked_ip, run_batch, seconds_of
from shared.ops import firewall as fw_ops
from shared.ops.firewall_bans import BanRequest, IpRequest, UnbanRequest


def add_blacklist_routes(app: FastAPI, peers: Peers) -> None:
    async def ban(body: BlacklistBody, request: Request) -> StatusMessage:
        ip = checked_ip(body.ip)
        client = access.client_host(request.scope)  # the firewall never bans the caller
        seconds = None if body.permanent else seconds_of(body.duration)
        req = BanRequest(
            ip=ip, reason=body.reason, permanent=body.permanent,
            client=client or msgspec.UNSET,
            duration=msgspec.UNSET if seconds is None else seconds,
        )  # fmt: skip
        result = await peers.ask(fw_ops.BAN, req)
        return StatusMessage(status=result.status, message=result.message)

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
        return await run_batch(request, "blacklist_batch", body, lambda item: ban(item, request))

    @app.get("/security/blacklist/{ip}", responses=doc(BlacklistLookup, 400))
    async def blacklist_get(ip: str) -> Response:
        addr = checked_ip(ip)
        data = await peers.ask(fw_ops.BLACKLIST_GET, IpRequest(ip=addr))
        return MsgspecResponse(BlacklistLookup(ip=ip, blacklisted=data.blacklisted))

    async def unban(request: Request, ip: str, action: str) -> StatusMessage:
        addr = checked_ip(ip)
        try:
            result = await peers.ask(fw_ops.UNBAN, UnbanRequest(ip=addr))
        except PeerError as exc:
            audit(request, action, addr, f"failed: {exc.status} {exc}")
            raise
        audit(request, action, addr, "ok")
        return result

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
