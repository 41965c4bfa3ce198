"""/docs and /redoc work without internet (issue 14 §4).

The assets are vendored (fsguard_api/static, hashes in its README.md). The browser check runs
the real process tree in a fresh network namespace that holds only `lo`, and Debian's
headless Chromium inside the same namespace: nothing outside the host is reachable, so the
pages render the operations only if every asset comes from fsguard itself.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsguard_api.app import create_app
from fsguard_api.docs import ASSETS, STATIC_DIR
from shared.config import Config
from tests.netns_helpers import requires_netns, run_in
from tests.system_helpers import RunningSystem, fsguard_config, running_fsguard

CHROMIUM = shutil.which("chromium")
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run does)"
)
API_PORT = 18111


def readme_hashes() -> dict[str, str]:
    text = (STATIC_DIR / "README.md").read_text()
    return dict(re.findall(r"^\| (\S+) \| [^|]+ \| ([0-9a-f]{64}) \|$", text, re.MULTILINE))


def test_vendored_assets_are_the_registry_files_listed_in_the_readme() -> None:
    listed = readme_hashes()
    on_disk = {p.name for p in STATIC_DIR.iterdir()} - {"README.md"}
    assert set(listed) == on_disk == set(ASSETS), (listed.keys(), on_disk, ASSETS.keys())
    for name, digest in listed.items():
        assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == digest, name


def test_pages_reference_only_local_assets() -> None:
    from fastapi.testclient import TestClient

    client = TestClient(create_app(Config()))
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text, r.text
    r = client.get("/static/swagger-ui.css")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/static/README.md").status_code == 404


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("docs")

    def cfg(port: int) -> dict[str, object]:
        return fsguard_config(tmp, port, set_name="fsg-docs", api_port=API_PORT)

    with running_fsguard(tmp, cfg, prefix="fsgdoc") as system:
        yield system


def dump_dom(system: RunningSystem, page: str, profile: Path) -> str:
    assert system.ns is not None and CHROMIUM is not None
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=20000",
        "--dump-dom", f"http://127.0.0.1:{API_PORT}{page}",
    ]  # fmt: skip
    done = run_in(system.ns, argv, check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return str(done.stdout)


def operations() -> list[tuple[str, str, str]]:
    spec = create_app(Config()).openapi()
    return [
        (method, path, op["operationId"])
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]


@requires_netns
@requires_chromium
def test_swagger_ui_renders_every_operation_offline(tree: RunningSystem, tmp_path: Path) -> None:
    assert tree.ns is not None
    routes = run_in(tree.ns, ["ip", "-o", "route", "show", "table", "all"], check=False).stdout
    assert "default" not in routes, routes  # no way out of the namespace
    dom = dump_dom(tree, "/docs", tmp_path / "profile")
    assert 'id="swagger-ui"' in dom
    rendered = set(re.findall(r'class="opblock opblock-(\w+)[^"]*" id="operations-[^"]*"', dom))
    assert rendered >= {"get", "post", "delete"}, rendered
    for method, path, _ in operations():
        assert f'data-path="{path}"' in dom, f"{method} {path} not rendered by Swagger UI"


@requires_netns
@requires_chromium
def test_redoc_renders_every_operation_offline(tree: RunningSystem, tmp_path: Path) -> None:
    dom = dump_dom(tree, "/redoc", tmp_path / "profile")
    for method, path, op_id in operations():
        assert f"operation/{op_id}" in dom, f"{method} {path} not rendered by ReDoc"
