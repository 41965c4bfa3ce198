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

import msgspec
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
from shared.control import ControlError, PeerUnavailable, arequest, dispatch
from shared.logs import set_level
from shared.reloadable import ReloadOrder, apply_in_place

log = logging.getLogger(__name__)

RELOAD_TIMEOUT = 15.0  # the supervisor asks every process in turn


class ReloadResult(msgspec.Struct, kw_only=True):
    """POST /security/reload (fsguard addition)."""

    status: str
    message: str
    applied: list[str]  # reloadable keys that changed, applied in every process
    restartRequired: list[str]  # changed keys that need a restart; not applied
    processes: dict[str, str]  # process -> "ok" | "unavailable (...)" | "error: ..."
    liftedBans: list[str] = []  # bans inside newly trusted networks, lifted


def apply(app: FastAPI, config: Config, args: dict[str, Any]) -> dict[str, Any]:
    try:
        order = ReloadOrder.from_args(args)
    except ValueError as exc:
        raise ControlError(str(exc), 400) from None
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
    return {"applied": applied}


async def _serve(app: FastAPI, config: Config, sock: Any) -> None:
    handlers = {
        "ping": lambda a: {"role": "api", "pid": os.getpid()},
        "reload": lambda a: apply(app, config, a),
    }
    while True:
        raw = await sock.recv()
        await sock.send(dispatch(handlers, raw))


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
            task = asyncio.ensure_future(_serve(a, config, sock))
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
            reply = await arequest(endpoint, "reload", {"actor": f"api:{actor}"},
                                   timeout=RELOAD_TIMEOUT)  # fmt: skip
        except PeerUnavailable as exc:
            access.audit(request.scope, "reload", "", "failed: supervisor unavailable")
            raise PeerError("supervisor unavailable: no answer to 'reload'", 503) from exc
        if not reply.ok:
            access.audit(request.scope, "reload", "", f"refused: {reply.error}")
            raise PeerError(reply.error, reply.status if 400 <= reply.status <= 599 else 500)
        access.audit(request.scope, "reload", "", "ok")
        return MsgspecResponse(msgspec.convert(reply.data, ReloadResult))
