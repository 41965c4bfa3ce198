"""chanDaemon reporting through the real firewall: a ban committed by the firewall (real
SQLite store, real kernel set in a namespace) reaches a real local HTTP receiver once,
with the Go payload; a duplicate decision reports nothing more."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from fsguard_firewall.durable import Durable
from fsguard_firewall.kernel import KernelFirewall
from fsguard_firewall.process import Firewall
from shared.config import Config
from shared.messages import BanDecision
from tests.netns_helpers import netns, requires_netns
from tests.system_helpers import wait_for
from tests.test_reporter import ChanDaemon, server  # noqa: F401  (fixture)

pytestmark = [requires_netns]


@pytest.fixture
def firewall(tmp_path: Path, server: ChanDaemon) -> Iterator[tuple[Firewall, Durable]]:  # noqa: F811
    config = msgspec.convert(
        {
            "paths": {"runtime_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state")},
            "security": {
                "ipset_name": "fsg-report",
                "chandaemon": {
                    "enabled": True,
                    "report_url": server.url,
                    "blocker_url": "http://192.0.2.10:8088",
                    "report_timeout": 1.0,
                },
            },
        },
        type=Config,
    )
    with netns("fsgrep") as ns:
        kernel = KernelFirewall(
            "fsg-report", "INPUT", default_timeout=3600, command_prefix=["ip", "netns", "exec", ns]
        )
        kernel.ensure_setup()
        durable = Durable.open(config)
        fw = Firewall(config, kernel, store=durable.bans)
        durable.attach(fw)
        try:
            yield fw, durable
        finally:
            if durable.reporter is not None:
                durable.reporter.stop()
            durable.store.close()


def test_committed_ban_is_reported_once(
    firewall: tuple[Firewall, Durable], server: ChanDaemon  # noqa: F811
) -> None:
    fw, durable = firewall
    decision = BanDecision(
        id="w0-1-1", ip="203.0.113.70", rule="failed_auth",
        reason="Exceeded max failed registrations (5)", duration=3600, user="1000",
    )
    fw.handle_batch([decision])
    fw.handle_batch([decision])  # re-sent after a lost ack: idempotent, no second report
    wait_for(server.accepted, 5)
    time.sleep(0.3)
    assert server.accepted() == [
        {
            "ip": "203.0.113.70",
            "reason": "Exceeded max failed registrations (5)",
            "ttl": 3600,
            "blocker": "http://192.0.2.10:8088",
            "service": "freeswitch-security",
            "fromUser": "1000",
        }
    ]
    assert durable.store.pending_count() == 0
    assert durable.bans.reports_queued == 1
