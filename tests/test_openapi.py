"""openapi.yaml is the generated document, committed. It depends on the FastAPI and
pydantic versions pinned in requirements.lock; regenerate with `make openapi`."""

from __future__ import annotations

from pathlib import Path

import yaml

from fsguard_api.app import create_app
from fsguard_api.openapi import render_yaml
from shared.config import Config

ROOT = Path(__file__).resolve().parent.parent

# Every (method, path) of the Go program (facts §4.3), plus fsguard's /docs helpers.
GO_ROUTES = {
    ("get", "/health"),
    ("get", "/cache/stats"),
    ("post", "/cache/security/clear"),
    ("get", "/system/stats"),
    ("delete", "/api/v1/ips/{ip}/block"),
    ("get", "/security/status"),
    ("get", "/security/stats"),
    ("get", "/security/whitelist"),
    ("post", "/security/whitelist"),
    ("post", "/security/whitelist/batch"),
    ("get", "/security/whitelist/{ip}"),
    ("delete", "/security/whitelist/{ip}"),
    ("get", "/security/blacklist"),
    ("post", "/security/blacklist"),
    ("post", "/security/blacklist/batch"),
    ("get", "/security/blacklist/{ip}"),
    ("delete", "/security/blacklist/{ip}"),
    ("get", "/security/failed"),
    ("get", "/security/wrong-call-states"),
    ("get", "/security/iptables"),
    ("get", "/security/esl"),
    ("post", "/security/esl/log-level"),
    ("post", "/security/esl/reconnect"),
    ("post", "/security/esl/command"),
    ("get", "/security/rate-limit"),
    ("get", "/security/rate-limit/calls"),
    ("get", "/security/rate-limit/registrations"),
    ("get", "/security/untrusted-networks"),
    ("post", "/security/untrusted-networks"),
    ("delete", "/security/untrusted-networks/{pattern}"),
    ("get", "/security/untrusted-networks/test/{domain}"),
}
# fsguard's additions: reload, a whitelisted network's own entry, and the decisions of
# rules in simulate mode (issue 12).
FSGUARD_ROUTES = {
    ("get", "/security/simulated"),
    ("post", "/security/reload"),
    ("get", "/security/whitelist/{address}/{prefix}"),
    ("delete", "/security/whitelist/{address}/{prefix}"),
}


def generated() -> str:
    return render_yaml(create_app(Config()).openapi())


def test_committed_openapi_yaml_is_current() -> None:
    committed = (ROOT / "openapi.yaml").read_text()
    assert committed == generated(), (
        "openapi.yaml is stale (the API or the locked FastAPI/pydantic changed): run "
        "`make openapi` (= .venv/bin/python -m fsguard_api.openapi > openapi.yaml)"
    )


def test_spec_covers_every_go_route_with_typed_responses() -> None:
    spec = yaml.safe_load(generated())
    routes = {(m, p) for p, item in spec["paths"].items() for m in item}
    assert routes == GO_ROUTES | FSGUARD_ROUTES
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ok = op["responses"]["200"]["content"]["application/json"]
            assert ok.get("schema"), f"{method} {path}: untyped 200"
            assert "422" not in op["responses"], f"{method} {path}: 422 is never answered"
    level = spec["components"]["schemas"]["LogLevelBody"]["properties"]["level"]
    assert level["enum"] == ["error", "warning", "info", "debug", "trace"]


def test_docs_page_is_served() -> None:
    app = create_app(Config())
    assert app.openapi_url == "/openapi.json"
    paths = {getattr(r, "path", "") for r in app.routes}
    assert {"/docs", "/redoc", "/static/{name}"} <= paths
