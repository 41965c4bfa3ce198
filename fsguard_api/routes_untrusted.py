"""/security/untrusted-networks: the firewall's untrusted domain patterns."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from fsguard_api.models import MsgspecResponse, StatusMessage, UntrustedTest
from fsguard_api.openapi import doc
from fsguard_api.peers import Peers
from fsguard_api.routes_common import PatternBody, audit
from shared.ops import firewall as fw_ops
from shared.ops.base import Empty
from shared.ops.firewall_lists import DomainRequest, PatternAddRequest, PatternRequest


def add_untrusted_routes(app: FastAPI, peers: Peers) -> None:
    @app.get("/security/untrusted-networks", responses=doc(list[str]))
    async def untrusted_list() -> Response:
        return MsgspecResponse(await peers.ask(fw_ops.UNTRUSTED, Empty()))

    @app.post("/security/untrusted-networks", responses=doc(StatusMessage, body=True))
    async def untrusted_add(request: Request, body: PatternBody) -> Response:
        req = PatternAddRequest(pattern=body.pattern, force=body.force)
        result = await peers.ask(fw_ops.UNTRUSTED_ADD, req)
        audit(request, "untrusted_add", body.pattern, "ok")
        return MsgspecResponse(result)

    @app.delete("/security/untrusted-networks/{pattern:pattern}", responses=doc(StatusMessage, 404))
    async def untrusted_delete(request: Request, pattern: str) -> Response:
        result = await peers.ask(fw_ops.UNTRUSTED_REMOVE, PatternRequest(pattern=pattern))
        audit(request, "untrusted_remove", pattern, "ok")
        return MsgspecResponse(result)

    @app.get("/security/untrusted-networks/test/{domain:path}", responses=doc(UntrustedTest))
    async def untrusted_test(domain: str) -> Response:
        return MsgspecResponse(await peers.ask(fw_ops.UNTRUSTED_TEST, DomainRequest(domain=domain)))
