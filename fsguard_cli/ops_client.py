"""HTTP client of fsguard's REST API (the Go program's paths and JSON shapes).

Stdlib `http.client` only. `ApiUnreachable` means nothing answered (connection refused,
timeout, DNS); `ApiError` carries the HTTP status and the `{"error": ...}` text.
A `socket_factory` lets the demo reach an API listening inside a network namespace.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from shared.config import Config, ConfigError, api_token, find_config_path, load_config

DEFAULT_API = "http://127.0.0.1:8088"

SocketFactory = Callable[[str, int, float], socket.socket]


class ApiUnreachable(Exception):
    """No HTTP answer from the API (refused, timed out, reset)."""


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str


def api_url_of(config: Config) -> str:
    host = config.server.host.strip() or "127.0.0.1"
    if host in ("0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


def resolve_endpoint(api: str | None, token: str | None, config_path: str | None) -> Endpoint:
    """--api / --token, else the config's server.host/port and API token, else the default.

    An explicit --config that cannot be loaded is a ConfigError; without --config a missing
    default config file just means the defaults.
    """
    config: Config | None = None
    if config_path is not None or api is None or token is None:
        try:
            path = find_config_path(config_path)
        except ConfigError:
            if config_path is not None:
                raise
        else:
            config = load_config(path)
    url = api or (api_url_of(config) if config is not None else DEFAULT_API)
    if token is None:
        token = api_token(config) if config is not None else ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--api: expected a URL such as {DEFAULT_API}, got {url!r}")
    return Endpoint(url.rstrip("/"), token)


class _FactoryConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, factory: SocketFactory) -> None:
        super().__init__(host, port, timeout=timeout)
        self._factory = factory

    def connect(self) -> None:
        self.sock = self._factory(self.host, self.port, self.timeout or 5.0)


class OpsClient:
    """Talks to one fsguard API; every method returns the decoded JSON."""

    def __init__(
        self,
        url: str = DEFAULT_API,
        token: str = "",
        *,
        timeout: float = 5.0,
        socket_factory: SocketFactory | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.socket_factory = socket_factory

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint, **kw: Any) -> OpsClient:
        return cls(endpoint.url, endpoint.token, **kw)

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_factory is not None:
            return _FactoryConnection(self.host, self.port, self.timeout, self.socket_factory)
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json", "User-Agent": "fsguard-cli"}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        try:
            try:
                conn.request(method, self.prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise ApiUnreachable(f"{self.url}: {exc or type(exc).__name__}") from exc
        finally:
            conn.close()
        try:
            payload: Any = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        if resp.status >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ApiError(resp.status, str(message or payload or resp.reason))
        return payload

    # --- the Go paths ---------------------------------------------------------------
    def health(self) -> Any:
        return self.request("GET", "/health")

    def security_status(self) -> Any:
        return self.request("GET", "/security/status")

    def iptables(self) -> Any:
        return self.request("GET", "/security/iptables")

    def esl(self) -> Any:
        return self.request("GET", "/security/esl")

    def stats(self) -> Any:
        return self.request("GET", "/security/stats")

    def blacklist(self) -> dict[str, dict[str, Any]]:
        data = self.request("GET", "/security/blacklist")
        return data if isinstance(data, dict) else {}

    def failed(self) -> dict[str, dict[str, Any]]:
        data = self.request("GET", "/security/failed")
        return data if isinstance(data, dict) else {}

    def whitelist(self) -> dict[str, dict[str, Any]]:
        data = self.request("GET", "/security/whitelist")
        return data if isinstance(data, dict) else {}

    def ban(
        self, ip: str, *, reason: str = "", duration: float | None = None, permanent: bool = False
    ) -> Any:
        body: dict[str, Any] = {"ip": ip, "reason": reason, "permanent": permanent}
        if duration is not None:
            body["duration"] = duration  # fsguard extension; the Go API ignores it
        return self.request("POST", "/security/blacklist", body)

    def unban(self, ip: str) -> Any:
        return self.request("DELETE", f"/security/blacklist/{quote(ip, safe='')}")

    def whitelist_add(
        self, ip: str, *, user: str = "", domain: str = "", permanent: bool = False,
        ttl: str | None = None, lift_bans: bool = False,
    ) -> Any:
        body: dict[str, Any] = {"ip": ip, "userId": user, "domain": domain,
                                "permanent": permanent}
        if ttl is not None:
            body["ttl"] = ttl
        if lift_bans:
            body["lift_bans"] = True
        return self.request("POST", "/security/whitelist", body)

    def whitelist_remove(self, ip: str) -> Any:
        # a network's "/" stays a path separator: /security/whitelist/{address}/{prefix}
        return self.request("DELETE", f"/security/whitelist/{quote(ip, safe='/')}")


# Reasons the rules write (fsguard_workers/rules/) -> rule names, for entries without "rule".
_REASON_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Exceeded max failed registrations"), "failed_auth"),
    (re.compile(r"^Exceeded max wrong call states"), "wrong_call_state"),
    (re.compile(r"^(Failed registration|Call) from untrusted domain"), "untrusted_domain"),
    (re.compile(r"^registration rate limit"), "registration_rate"),
    (re.compile(r"^call rate limit"), "call_rate"),
    (re.compile(r"^User enumeration"), "user_enumeration"),
    (re.compile(r"^Source address in untrusted network"), "untrusted_network"),
    (re.compile(r"^Scanner User-Agent"), "scanner_user_agent"),
    (re.compile(r"^Unauthenticated call to"), "toll_fraud"),
    (re.compile(r"^Extension scanning"), "extension_scan"),
    (re.compile(r"^Request to the bare IP"), "bare_ip"),
)
_SCANNER_UA = re.compile(r'^Scanner User-Agent "(.*)"$')


def rule_of(entry: dict[str, Any]) -> str:
    """The rule of a blacklist entry: its `rule` field, else recognised from the reason."""
    rule = entry.get("rule")
    if isinstance(rule, str) and rule:
        return rule
    reason = str(entry.get("reason") or "")
    for pattern, name in _REASON_RULES:
        if pattern.search(reason):
            return name
    return "manual" if reason else "unknown"


def user_agent_of(entry: dict[str, Any]) -> str:
    ua = entry.get("userAgent") or entry.get("user_agent")
    if isinstance(ua, str) and ua:
        return ua
    m = _SCANNER_UA.match(str(entry.get("reason") or ""))
    return m.group(1) if m else ""
