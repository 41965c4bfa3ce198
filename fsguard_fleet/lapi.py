"""A small CrowdSec Local API client on http.client (no extra dependency).

Watcher calls (POST /v1/alerts, DELETE /v1/decisions) carry a JWT from
POST /v1/watchers/login, renewed before it expires and once more on a 401.
Bouncer calls (GET /v1/decisions/stream) carry the X-Api-Key header.
Every failure is a `LapiError` whose `kind` says what went wrong; secrets never
appear in its message. Every call has a timeout (connect and each read).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec

from shared.crowdsec import RemoteDecision, StreamResponse, validate

USER_AGENT = "fsguard-fleet/1"
TOKEN_MARGIN = 60.0  # renew the JWT this long before it expires
MAX_BODY = 256 * 1024 * 1024  # a startup stream of 1M decisions is ~150 MB
_stream_decoder = msgspec.json.Decoder(StreamResponse)


class LapiError(Exception):
    """A LAPI call failed. kind: unreachable | timeout | auth | server | rejected | garbage."""

    def __init__(self, kind: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (everything but a 4xx refusal)."""
        return self.kind != "rejected"


class Stream(msgspec.Struct, kw_only=True):
    new: list[RemoteDecision]
    deleted: list[RemoteDecision]
    skipped: int  # entries that are not ban decisions on Ip/Range, or malformed


def _expiry(text: Any) -> float:
    """Wall time of the login answer's `expire` (RFC 3339); 0 when unreadable."""
    if not isinstance(text, str):
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class LapiClient:
    def __init__(
        self,
        url: str,
        *,
        machine_id: str = "",
        password: str = "",
        api_key: str = "",
        timeout: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid LAPI URL {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self.machine_id = machine_id
        self._password = password
        self._api_key = api_key
        self.timeout = timeout
        self._token = ""
        self._token_expires = 0.0
        self.logins = 0

    # --- transport --------------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """One HTTP exchange on a fresh connection. Raises LapiError (unreachable/timeout)."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        hdrs = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        conn = self._connection(self.timeout if timeout is None else timeout)
        where = f"{method} {self.url}{path.split('?', 1)[0]}"
        try:
            conn.request(method, self._base + path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read(MAX_BODY + 1)
        except TimeoutError:
            raise LapiError("timeout", f"{where}: no answer within {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise LapiError("unreachable", f"{where}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if len(payload) > MAX_BODY:
            raise LapiError("garbage", f"{where}: answer larger than {MAX_BODY} bytes")
        return resp.status, payload

    @staticmethod
    def _check(where: str, status: int, payload: bytes) -> None:
        if 200 <= status < 300:
            return
        detail = payload[:200].decode("utf-8", "replace").replace("\n", " ")
        if status in (401, 403):
            raise LapiError("auth", f"{where}: HTTP {status}: {detail}", status)
        if status >= 500 or status in (408, 429):
            raise LapiError("server", f"{where}: HTTP {status}: {detail}", status)
        raise LapiError("rejected", f"{where}: HTTP {status}: {detail}", status)

    # --- watcher ----------------------------------------------------------------------

    def login(self) -> None:
        status, payload = self.request(
            "POST",
            "/v1/watchers/login",
            body={"machine_id": self.machine_id, "password": self._password, "scenarios": []},
        )
        self._check("watcher login", status, payload)
        try:
            answer = json.loads(payload)
            token = answer["token"]
            if not isinstance(token, str) or not token:
                raise ValueError("empty token")
        except (ValueError, KeyError, TypeError):
            raise LapiError("garbage", "watcher login: answer has no token") from None
        self._token = token
        expires = _expiry(answer.get("expire"))
        self._token_expires = expires if expires else time.time() + 600.0
        self.logins += 1

    def _watcher(self, method: str, path: str, body: Any = None) -> bytes:
        if not self._token or time.time() >= self._token_expires - TOKEN_MARGIN:
            self.login()
        for attempt in (1, 2):
            status, payload = self.request(
                method, path, body=body, headers={"Authorization": f"Bearer {self._token}"}
            )
            if status == 401 and attempt == 1:
                self._token = ""
                self.login()  # expired or revoked early: one fresh login, then retry
                continue
            self._check(f"{method} {path.split('?', 1)[0]}", status, payload)
            return payload
        raise AssertionError("unreachable")

    def push_alerts(self, alerts: list[dict[str, Any]]) -> list[str]:
        """POST /v1/alerts with many alerts; returns the alert ids the LAPI created."""
        payload = self._watcher("POST", "/v1/alerts", alerts)
        try:
            ids = json.loads(payload)
        except ValueError:
            raise LapiError("garbage", "POST /v1/alerts: answer is not JSON") from None
        if not isinstance(ids, list):
            raise LapiError("garbage", "POST /v1/alerts: answer is not a list of ids")
        return [str(i) for i in ids]

    def delete_decisions(self, value: str) -> int:
        """DELETE /v1/decisions for one address (?ip=) or prefix (?range=)."""
        param = "range" if "/" in value else "ip"
        payload = self._watcher("DELETE", "/v1/decisions?" + urlencode({param: value}))
        try:
            answer = json.loads(payload)
            return int(answer.get("nbDeleted", 0))
        except (ValueError, AttributeError, TypeError):
            raise LapiError("garbage", "DELETE /v1/decisions: unreadable answer") from None

    # --- bouncer ----------------------------------------------------------------------

    def stream(
        self,
        *,
        startup: bool,
        origins: list[str] | None = None,
        scenarios_containing: list[str] | None = None,
        scenarios_not_containing: list[str] | None = None,
    ) -> Stream:
        """GET /v1/decisions/stream: the validated ban decisions on Ip/Range, new and deleted."""
        query: dict[str, str] = {"startup": "true" if startup else "false", "scopes": "ip,range"}
        for name, words in (
            ("origins", origins),
            ("scenarios_containing", scenarios_containing),
            ("scenarios_not_containing", scenarios_not_containing),
        ):
            if words:
                query[name] = ",".join(words)
        status, payload = self.request(
            "GET",
            "/v1/decisions/stream?" + urlencode(query),
            headers={"X-Api-Key": self._api_key},
        )  # the timeout bounds each socket read, so a large startup stream still arrives
        self._check("GET /v1/decisions/stream", status, payload)
        try:
            raw = _stream_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise LapiError(
                "garbage", f"GET /v1/decisions/stream: unreadable answer: {exc}"
            ) from None
        new: list[RemoteDecision] = []
        deleted: list[RemoteDecision] = []
        skipped = 0
        for out, items, is_deleted in ((new, raw.new, False), (deleted, raw.deleted, True)):
            for d in items or ():
                valid = validate(d, deleted=is_deleted)
                if valid is None:
                    skipped += 1
                else:
                    out.append(valid)
        return Stream(new=new, deleted=deleted, skipped=skipped)
