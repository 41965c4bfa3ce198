"""POST /security/esl/log-level: the log level of every process."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from starlette.responses import Response

from fsguard_api.models import MsgspecResponse, StatusMessage
from fsguard_api.openapi import doc
from fsguard_api.peers import PeerError, Peers
from fsguard_api.routes_common import LogLevelBody, audit
from shared.config import Config, worker_count
from shared.logs import set_level
from shared.ops import firewall as fw_ops
from shared.ops import supervisor as sup_ops
from shared.ops import worker
from shared.ops.common import LogLevelRequest


def add_log_level_routes(app: FastAPI, config: Config, peers: Peers) -> None:
    workers = worker_count(config)

    @app.post("/security/esl/log-level", responses=doc(StatusMessage, body=True))
    async def log_level(request: Request, body: LogLevelBody) -> Response:
        level = LogLevelRequest(level=body.level)
        results = await asyncio.gather(
            peers.ask(sup_ops.LOG_LEVEL, level),
            peers.ask(fw_ops.LOG_LEVEL, level),
            *(peers.ask(worker.LOG_LEVEL, level, i) for i in range(workers)),
            return_exceptions=True,
        )
        set_level(body.level)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            audit(request, "log_level", body.level, f"partial: {failures[0]}")
            first = failures[0]
            if isinstance(first, PeerError):
                raise PeerError(f"log level not applied everywhere: {first}", first.status)
            raise first
        audit(request, "log_level", body.level, "ok")
        return MsgspecResponse(
            StatusMessage(status="success", message=f"ESL log level set to {body.level}")
        )
