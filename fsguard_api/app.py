"""FastAPI application: the Go program's REST API answered by asking the owners.

The API holds no state. Each route asks the supervisor, the workers or the firewall
over their control sockets (fsguard_api.peers) and renders the Go shapes (models).
Every error body is {"error": "..."}.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from fsguard_api import access, docs, dropin, metrics, openapi, reload, routes
from fsguard_api.cache import ResponseCache
from fsguard_api.esl_commands import CommandRefused, check_command
from fsguard_api.models import (
    BlacklistEntry,
    CommandResult,
    EslStats,
    Health,
    IptablesInfo,
    MsgspecResponse,
    SecurityStatus,
    SimulatedDecision,
    StatusMessage,
    error_response,
)
from fsguard_api.openapi import doc
from fsguard_api.peers import DEFAULT_TIMEOUT, PeerError, Peers
from shared.audit import AuditLog, install_handler
from shared.config import Config, api_token, worker_count
from shared.control import PeerReplyInvalid
from shared.esl_hardening import esl_warnings
from shared.ops import firewall as fw_ops
from shared.ops import supervisor as sup_ops
from shared.ops import worker
from shared.ops.base import Empty
from shared.ops.supervisor import EslCommandRequest, SupervisorEslStats

log = logging.getLogger(__name__)


class CommandBody(BaseModel):
    command: str = Field(description="an allow-listed FreeSWITCH API command")


API_DESCRIPTION = (
    "fsguard REST API: a drop-in for the freeswitch-security (Go) API. Every error body "
    'is {"error": "..."}. Non-GET requests need a source IP in '
    "security.chandaemon.allowed_api_ips (an empty list denies) and, when server.api_token "
    "is set, `Authorization: Bearer <token>`; server.protect_reads extends this to GETs "
    "that expose SIP users or ESL details. See docs/api.md."
)


def version() -> str:
    try:
        return metadata.version("fsguard")
    except metadata.PackageNotFoundError:
        return "dev"


def configured_token(config: Config) -> str:
    """The API token ("" = none): server.api_token or the contents of api_token_file."""
    return api_token(config)


def utf8_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def audit(request: Request, action: str, command: str, outcome: str) -> None:
    access.audit(request.scope, action, command, outcome)


# --- error rendering -----------------------------------------------------------------------


def _validation_message(exc: RequestValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return "invalid JSON body"
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    async def on_peer_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, PeerError)
        return error_response(exc.status, str(exc))

    async def on_bad_reply(_: Request, exc: Exception) -> Response:
        log.error("%s", exc)
        return error_response(502, str(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not the first route's
            headers["Allow"] = ", ".join(dropin.allowed_methods(app, request.scope))
        return error_response(exc.status_code, message or str(exc.detail), headers)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, _validation_message(exc))

    async def on_crash(_: Request, exc: Exception) -> Response:
        log.error("unhandled error: %r", exc, exc_info=exc)
        return error_response(500, "internal server error")

    app.add_exception_handler(PeerError, on_peer_error)
    app.add_exception_handler(PeerReplyInvalid, on_bad_reply)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_crash)


# --- routes ------------------------------------------------------------------------------


def add_health_routes(app: FastAPI) -> None:
    ver = version()

    @app.get("/health", responses=doc(Health, peer=False))
    async def health() -> Response:
        return MsgspecResponse(Health(status="ok", version=ver))


def add_security_routes(app: FastAPI, config: Config, peers: Peers) -> None:
    sec = config.security

    async def esl_stats() -> SupervisorEslStats:
        return await peers.ask(sup_ops.ESL_STATS, Empty())

    @app.get("/security/status", responses=doc(SecurityStatus))
    async def security_status() -> Response:
        counts, esl, whitelisted = await asyncio.gather(
            peers.ask(fw_ops.STATUS, Empty()), esl_stats(), dropin.whitelist_total(peers)
        )
        return MsgspecResponse(
            SecurityStatus(
                enabled=sec.enabled,
                autoBlock=sec.auto_block_enabled,
                whitelistCount=whitelisted,  # manual and learned, as Go counts
                blacklistCount=counts.blacklistCount,
                eslConnected=esl.connected,
                eslHost=esl.host,
                eslPort=str(esl.port),
                eslWarnings=esl_warnings(config),
            )
        )

    @app.get("/security/simulated", responses=doc(list[SimulatedDecision]))
    async def security_simulated() -> Response:
        """Decisions of rules in simulate mode (security.rules.<rule>.mode), newest last."""
        per_worker = await peers.ask_workers(worker.SIMULATED, Empty())
        items = [d for decisions in per_worker for d in decisions]
        items.sort(key=lambda d: d.time)
        return MsgspecResponse(items)

    @app.get("/security/esl", responses=doc(EslStats))
    async def security_esl() -> Response:
        esl, per_worker = await asyncio.gather(
            esl_stats(), peers.ask_workers(worker.STATS, Empty())
        )
        processed = sum(w.processed for w in per_worker)
        return MsgspecResponse(
            EslStats(
                connected=esl.connected,
                host=esl.host,
                port=str(esl.port),
                connectionAttempts=esl.connectionAttempts,
                connectionErrors=esl.connectionErrors,
                eventsProcessed=processed,
                eventsQueued=esl.eventsQueued,
                eventsDropped=esl.eventsDropped,
                logLevel=esl.logLevel,
                workerCount=esl.workerCount,
                queueLength=esl.queueLength,
                queueCapacity=esl.queueCapacity,
            )
        )

    @app.get("/security/blacklist", responses=doc(dict[str, BlacklistEntry]))
    async def security_blacklist() -> Response:
        return MsgspecResponse(await peers.ask(fw_ops.BLACKLIST, Empty()))

    @app.get("/security/iptables", responses=doc(IptablesInfo))
    async def security_iptables() -> Response:
        return MsgspecResponse(await peers.ask(fw_ops.IPTABLES, Empty()))

    @app.post("/security/esl/reconnect", responses=doc(StatusMessage))
    async def security_esl_reconnect(request: Request) -> Response:
        try:
            await peers.ask(sup_ops.RECONNECT, Empty())
        except PeerError as exc:
            audit(request, "reconnect", "", f"failed: {exc.status} {exc}")
            raise
        audit(request, "reconnect", "", "ok")
        return MsgspecResponse(
            StatusMessage(status="success", message="ESL reconnection initiated")
        )

    @app.post("/security/esl/command", responses=doc(CommandResult, 500, 504, body=True))
    async def security_esl_command(request: Request, body: CommandBody) -> Response:
        command = body.command
        if not command:
            audit(request, "esl_command", command, "refused: empty")
            return error_response(400, "command is required")
        if not utf8_text(command):  # lone surrogates (JSON "\ud800"): a bad body
            shown = command.encode("utf-8", "backslashreplace").decode("ascii", "replace")
            audit(request, "esl_command", shown, "refused: not valid UTF-8")
            return error_response(400, "command is not valid UTF-8")
        try:
            normalized = check_command(command, sec.esl_allowed_commands)
        except CommandRefused as exc:
            audit(request, "esl_command", command, f"refused: {exc}")
            # As the Go program: 500 with this message (403 means "source IP not permitted").
            return error_response(500, f"command not allowed: {command}")
        try:
            result = await peers.ask(sup_ops.ESL_COMMAND, EslCommandRequest(command=normalized))
        except (PeerError, PeerReplyInvalid) as exc:
            audit(request, "esl_command", normalized, f"failed: {exc}")
            raise
        audit(request, "esl_command", normalized, "ok")
        return MsgspecResponse(result)


# --- factory ----------------------------------------------------------------------------


def create_app(config: Config, *, peer_timeout: float = DEFAULT_TIMEOUT) -> FastAPI:
    """Build the API for one config. Peers are asked over the runtime dir's sockets."""
    peers = Peers(config.paths.runtime_dir, worker_count(config), timeout=peer_timeout)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            peers.close()

    app = FastAPI(
        title="fsguard",
        version=version(),
        lifespan=lifespan,
        description=API_DESCRIPTION,
        docs_url=None,  # docs.install serves /docs and /redoc with vendored assets
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.peers = peers
    app.state.cache = ResponseCache(config.cache.enabled, config.cache.security_ttl)
    install_error_handlers(app)
    add_health_routes(app)
    routes.add_cache_routes(app)
    if config.security.enabled:  # like Go: the /security routes exist only when enabled
        add_security_routes(app, config, peers)
        routes.add_list_routes(app, config, peers, version())
        reload.install(app, config)  # POST /security/reload, the api.control socket
    openapi.install(app)
    docs.install(app)
    # Added last = outermost: access control runs first, before routing and body reads.
    app.add_middleware(access.BodyLimitMiddleware)
    app.add_middleware(
        access.AccessMiddleware,
        allow_list=access.AllowList(config.security.chandaemon.allowed_api_ips),
        token=configured_token(config),
        protect_reads=config.server.protect_reads,
    )
    install_handler(AuditLog(config, "api"))  # "fsguard.audit" records -> audit.log/audit.db
    metrics.install(app, config)  # GET /metrics; its counting middleware is the outermost
    return app
