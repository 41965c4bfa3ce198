"""Who may call what: source-IP allow-list, bearer token, request body cap.

Differences from the Go program (facts §4.2, §9.1), on purpose:
- an empty or all-invalid `allowed_api_ips` DENIES every protected request (Go failed open);
- when a token is configured, protected requests need `Authorization: Bearer <token>`;
- with `server.protect_reads`, GETs that expose SIP users or ESL details are protected too.
The source address is the TCP peer only (never X-Forwarded-For), IPv4-mapped IPv6 unmapped.
"""

from __future__ import annotations

import datetime
import hmac
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fsguard_api.models import error_response
from shared.iputil import NetworkSet, parse_ip

log = logging.getLogger(__name__)
audit_log = logging.getLogger("fsguard.audit")

OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# GET paths protected when server.protect_reads is true: a path matches an entry when
# it equals it or continues it with "/" (so /security/whitelist/1.2.3.4 is included).
PROTECTED_READS: tuple[str, ...] = (
    "/security/failed",
    "/security/whitelist",
    "/security/esl",
    "/security/wrong-call-states",
    "/security/rate-limit/calls",
    "/security/rate-limit/registrations",
)
MAX_BODY_BYTES = 1024 * 1024

IP_DENIED = "source IP not permitted for this operation"
TOKEN_MISSING = "missing bearer token"
TOKEN_INVALID = "invalid bearer token"
BODY_TOO_LARGE = f"request body larger than {MAX_BODY_BYTES} bytes"


class AllowList:
    """Parsed `allowed_api_ips` (bare IPs or CIDRs). Empty means nobody is allowed."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = NetworkSet()
        invalid: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                self.networks.add(entry)
            except ValueError:
                invalid.append(entry)
        if invalid:
            log.error("allowed_api_ips: ignoring invalid entries %r", invalid)
        if not self.networks.cidrs:
            log.warning("allowed_api_ips has no valid entry: every protected request is denied")

    def permits(self, host: str | None) -> bool:
        if not host:
            return False
        try:
            return self.networks.contains(parse_ip(host))
        except ValueError:
            return False


def is_protected(method: str, path: str, protect_reads: bool) -> bool:
    if method not in OPEN_METHODS:
        return True
    if not protect_reads or method == "OPTIONS":
        return False
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_READS)


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def token_matches(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


AUDIT_MAX_CHARS = 1100  # longer than any allowed command (1024 bytes); the rest is cut


def audit(scope: Scope, action: str, subject: str, outcome: str) -> None:
    """One audit line: time, source, identity, action, subject (repr-escaped), outcome."""
    shown = subject if len(subject) <= AUDIT_MAX_CHARS else subject[:AUDIT_MAX_CHARS] + "..."
    state = scope.get("state") or {}
    audit_log.info(
        "time=%s source=%s identity=%s action=%s command=%r outcome=%s",
        datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        client_host(scope) or "-",
        state.get("identity", "anonymous"),
        action,
        shown,
        outcome,
    )


class AccessMiddleware:
    """ASGI middleware: allow-list then token, before routing (so before any 404)."""

    def __init__(
        self, app: ASGIApp, *, allow_list: AllowList, token: str, protect_reads: bool
    ) -> None:
        self.app = app
        self.allow_list = allow_list
        self.token = token
        self.protect_reads = protect_reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = bearer_token(scope.get("headers", []))
        authenticated = bool(self.token) and token_matches(given, self.token)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["identity"] = "token" if authenticated else "anonymous"
        if is_protected(scope["method"], scope["path"], self.protect_reads):
            request_line = f"{scope['method']} {scope['path']}"
            if not self.allow_list.permits(client_host(scope)):
                audit(scope, "http", request_line, f"denied: 403 {IP_DENIED}")
                await error_response(403, IP_DENIED)(scope, receive, send)
                return
            if self.token and not authenticated:
                message = TOKEN_MISSING if given is None else TOKEN_INVALID
                audit(scope, "http", request_line, f"denied: 401 {message}")
                headers = {"WWW-Authenticate": "Bearer"}
                await error_response(401, message, headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """ASGI middleware: 413 for bodies over `limit` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await error_response(413, BODY_TOO_LARGE)(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises HTTPException from body reading; our handler renders it.
                    raise HTTPException(413, BODY_TOO_LARGE)
            return message

        await self.app(scope, limited_receive, send)
