"""API-side request counting for `fsguard_api_requests_total{route,code}`.

Route labels are route templates (`/security/blacklist/{ip}`), never raw paths; requests
that match no route count as `route="<unmatched>"`.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"


class RequestCounter:
    """fsguard_api_requests_total{route,code}: counts in this API process."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, route: str, code: int) -> None:
        key = (route, str(code))
        self.counts[key] = self.counts.get(key, 0) + 1


def route_template(scope: Scope, routes: Iterable[BaseRoute]) -> str:
    """The path template of the route that served (or would serve) this request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for candidate in routes:  # requests answered before routing (401, 403, 413)
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            candidate_path = getattr(candidate, "path", None)
            if isinstance(candidate_path, str):
                return candidate_path
    return UNMATCHED


class RequestMetricsMiddleware:
    """Outermost ASGI middleware: counts every HTTP response by route template and code."""

    def __init__(self, app: ASGIApp, *, counter: RequestCounter, routes: list[BaseRoute]) -> None:
        self.app = app
        self.counter = counter
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.counter.add(route_template(scope, self.routes), status)
