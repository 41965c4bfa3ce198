"""Shared pytest setup: make `tests.*` helpers and the repo root importable either way."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
for path in (_TESTS.parent, _TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import os  # noqa: E402
from collections.abc import Generator, Iterator  # noqa: E402

import pytest  # noqa: E402

from fsguard_cli.netns import netns  # noqa: E402
from tests.firewall_helpers import Proc, running_firewall, write_config  # noqa: E402


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh network namespace (lo up) for one test, always deleted afterwards; named
    after the test's module. Kernel tests mark themselves `requires_netns`
    (tests/netns_helpers.py), so they skip where namespaces cannot be made."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with netns(module[:12]) as name:
        yield name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """With CI set, a skip is a failure: CI installs every tool, kernel feature and
    namespace a test needs, so a test that would skip there proves nothing and must say so.
    (Expected failures, `xfail`, are left alone.)"""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {reason}"


@pytest.fixture
def fw_proc(ns: str, tmp_path: Path) -> Iterator[Proc]:
    """The firewall process (tests/firewall_helpers.py) in a fresh namespace, answering
    `ping`, with the default test config in tmp_path; killed afterwards."""
    config, runtime = write_config(tmp_path)
    with running_firewall(ns, config, runtime) as proc:
        yield proc
