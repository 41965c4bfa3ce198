"""The API's side of reload: POST /security/reload, and the API's own control socket.

POST /security/reload asks the supervisor to re-read and validate the config file and to
send the reloadable changes to every process (fsguard_supervisor/reload.py); a bad file
answers 400 naming the key and value, and nothing changes. The supervisor reaches the API
on `api.control` (REP, bound for the app's lifetime), where `reload` updates the app's
Config in place (routes read it at request time) and rebuilds the access allow-list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import zmq
import zmq.asyncio
from fastapi import FastAPI, Request
from starlette.responses import Response

from fsguard_api import access
from fsguard_api.models import MsgspecResponse
from fsguard_api.openapi import doc
from fsguard_api.peers import PeerError
from shared import addresses
from shared.config import Config
from shared.control import ControlError, PeerUnavailable, acall, dispatch
from shared.logs import set_level
from shared.ops import api as api_ops
from shared.ops import supervisor as sup_ops
from shared.ops.api import API
from shared.ops.base import OpTable
from shared.ops.common import Actor, Ping
from shared.ops.reload import Reloaded
from shared.ops.supervisor import ReloadResult
from shared.reloadable import ReloadOrder, apply_in_place

log = logging.getLogger(__name__)

RELOAD_TIMEOUT = 15.0  # the supervisor asks every process in turn


def apply(app: FastAPI, config: Config, order: ReloadOrder) -> Reloaded:
    """The API's `reload` op: the order's keys onto the app's Config, in place."""
    applied = apply_in_place(config, order)
    if any(k.startswith("security.chandaemon.allowed_api_ips") for k in applied):
        fresh = access.AllowList(config.security.chandaemon.allowed_api_ips)
        for mw in app.user_middleware:
            allow = mw.kwargs.get("allow_list")
            if isinstance(allow, access.AllowList):
                allow.networks = fresh.networks  # the built middleware holds this object
    if "logging.level" in applied:
        set_level(config.logging.level)
    if applied:
        log.info("reloaded: %s", ", ".join(applied))
    return Reloaded(applied=applied)


def op_table(app: FastAPI, config: Config) -> OpTable:
    """The API's handler for every op of shared/ops/api.py."""
    table = OpTable(API)
    table.bind(api_ops.PING, lambda _: Ping(role="api", pid=os.getpid()))
    table.bind(api_ops.RELOAD, lambda order: apply(app, config, order))
    return table


async def _serve(table: OpTable, sock: Any) -> None:
    while True:
        raw = await sock.recv()
        await sock.send(dispatch(table, raw))


def install(app: FastAPI, config: Config) -> None:
    """Add POST /security/reload and bind api.control while the app runs."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        endpoint = addresses.api_control(config.paths.runtime_dir)
        task: asyncio.Task[None] | None = None
        try:
            sock.bind(endpoint)
            task = asyncio.ensure_future(_serve(op_table(a, config), sock))
        except zmq.ZMQError as exc:
            log.warning("no control socket %s (%s): reloads will not reach the API",
                        endpoint, exc)  # fmt: skip
        try:
            async with inner(a) as state:
                yield state
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addresses.ipc_path(endpoint))
            sock.close(0)
            ctx.term()

    app.router.lifespan_context = lifespan

    @app.post("/security/reload", responses=doc(ReloadResult, 400))
    async def reload(request: Request) -> Response:
        endpoint = addresses.supervisor_control(config.paths.runtime_dir)
        actor = access.client_host(request.scope) or "api"
        try:
            result = await acall(endpoint, sup_ops.RELOAD, Actor(actor=f"api:{actor}"),
                                 timeout=RELOAD_TIMEOUT)  # fmt: skip
        except PeerUnavailable as exc:
            access.audit(request.scope, "reload", "", "failed: supervisor unavailable")
            raise PeerError("supervisor unavailable: no answer to 'reload'", 503) from exc
        except ControlError as exc:
            access.audit(request.scope, "reload", "", f"refused: {exc}")
            raise PeerError(str(exc), exc.status) from None
        access.audit(request.scope, "reload", "", "ok")
        return MsgspecResponse(result)
