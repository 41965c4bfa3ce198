"""/security/untrusted-networks: the firewall's untrusted domain patterns."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from fsguard_api.models import MsgspecResponse, StatusMessage, UntrustedTest, convert
from fsguard_api.openapi import doc
from fsguard_api.peers import Peers
from fsguard_api.routes_common import PatternBody, audit


def add_untrusted_routes(app: FastAPI, peers: Peers) -> None:
    @app.get("/security/untrusted-networks", responses=doc(list[str]))
    async def untrusted_list() -> Response:
        return MsgspecResponse(convert(await peers.firewall("untrusted"), list[str], "firewall"))

    @app.post("/security/untrusted-networks", responses=doc(StatusMessage, body=True))
    async def untrusted_add(request: Request, body: PatternBody) -> Response:
        data = await peers.firewall("untrusted_add", {"pattern": body.pattern, "force": body.force})
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
