"""The firewall's side of reload, in-process: a real Firewall with its SQLite store, kernel
sets in a namespace, a real local chanDaemon receiver, and ListChanges captured from
`publish` (issue 14 §3)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fsguard_firewall.durable import Durable
from fsguard_firewall.kernel import KernelFirewall
from fsguard_firewall.process import Firewall
from fsguard_firewall.reconfigure import apply
from shared.config import Config
from shared.messages import ListChange
from shared.ops.base import Empty
from shared.ops.firewall import RELOAD as FIREWALL_RELOAD
from shared.ops.firewall_bans import BanRequest
from shared.ops.firewall_lists import PatternAddRequest
from shared.ops.reload import FirewallReloaded
from shared.reloadable import ReloadOrder, plan
from tests.netns_helpers import netns, requires_netns
from tests.system_helpers import wait_for
from tests.test_reporter import ChanDaemon, server  # noqa: F401  (fixture)

pytestmark = [requires_netns]


def _config(tmp: Path, **security: Any) -> Config:
    raw = {
        "paths": {"runtime_dir": str(tmp / "run"), "state_dir": str(tmp / "state")},
        "security": {"ipset_name": "fsg-rcf", "untrusted_networks": ["old.example"],
                     **security},
    }  # fmt: skip
    return msgspec.convert(raw, type=Config)


class Rig:
    def __init__(self, fw: Firewall, durable: Durable, changes: list[ListChange]) -> None:
        self.fw, self.durable, self.changes = fw, durable, changes

    def reload(self, tmp: Path, **security: Any) -> FirewallReloaded:
        new = _config(tmp, **security)
        order = ReloadOrder(config=new, keys=plan(self.fw.config, new).apply)
        wire = msgspec.to_builtins(order)  # as it travels over the control socket
        return apply(self.fw, self.durable, FIREWALL_RELOAD.decode_request(wire))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    config = _config(tmp_path)
    changes: list[ListChange] = []
    with netns("fsgrcf") as ns:
        kernel = KernelFirewall("fsg-rcf", "INPUT", default_timeout=3600,
                                command_prefix=["ip", "netns", "exec", ns])  # fmt: skip
        kernel.ensure_setup()
        durable = Durable.open(config)
        fw = Firewall(config, kernel, store=durable.bans, publish=changes.append)
        durable.attach(fw)
        try:
            yield Rig(fw, durable, changes)
        finally:
            if durable.reporter is not None:
                durable.reporter.stop()
            durable.store.close()


def test_untrusted_config_patterns_swap_and_runtime_ones_stay(rig: Rig, tmp_path: Path) -> None:
    rig.fw.lists.op_untrusted_add(PatternAddRequest(pattern="runtime.example"))
    rig.changes.clear()
    result = rig.reload(tmp_path, untrusted_networks=["new.example"])
    assert result.untrusted == ["-old.example", "+new.example"]
    assert rig.fw.lists.op_untrusted(Empty()) == ["runtime.example", "new.example"]
    assert [(c.op, c.ip) for c in rig.changes] == [("remove", "old.example"),
                                                   ("add", "new.example")]  # fmt: skip
    stored = [p for p, source in rig.durable.store.patterns()]
    assert stored == ["runtime.example"]  # config patterns are never persisted


def test_chandaemon_turned_on_by_reload_reports_the_next_ban(
    rig: Rig, tmp_path: Path, server: ChanDaemon  # noqa: F811
) -> None:
    assert rig.durable.reporter is None
    chandaemon = {"enabled": True, "report_url": server.url, "report_timeout": 1.0}
    result = rig.reload(tmp_path, chandaemon=chandaemon)
    assert "security.chandaemon.enabled" in result.applied
    assert rig.durable.reporter is not None and rig.durable.bans.reporter is rig.durable.reporter
    rig.fw.control.op_ban(BanRequest(ip="203.0.113.71", reason="manual test"))
    wait_for(server.accepted, 5)
    assert [r["ip"] for r in server.accepted()] == ["203.0.113.71"]

    rig.reload(tmp_path)  # off again: the reporter stops, nothing more is reported
    assert rig.durable.reporter is None
    rig.fw.control.op_ban(BanRequest(ip="203.0.113.72", reason="manual test"))
    assert rig.durable.store.pending_count() == 0


def test_trusted_reload_refuses_and_lifts(rig: Rig, tmp_path: Path) -> None:
    rig.fw.control.op_ban(BanRequest(ip="203.0.113.73"))
    result = rig.reload(tmp_path, trusted_networks=["127.0.0.0/8", "203.0.113.0/24"])
    assert result.liftedBans == ["203.0.113.73"]
    assert rig.fw.store.active(time.time()) == []
    assert rig.fw.refuse(rig.fw.parse_target("203.0.113.74"))
