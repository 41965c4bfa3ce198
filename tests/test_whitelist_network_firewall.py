"""Whitelisted networks in the firewall process, for real: its SQLite store in a tmp state
dir, the kernel sets in a network namespace, decisions over the real PUSH socket, and a
restart of the process (issue 14 §2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from shared import addresses
from shared.messages import encode
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from shared.ops.firewall_bans import BanRequest, IpRequest
from shared.ops.firewall_lists import WhitelistAddRequest, WhitelistRemoveRequest
from shared.ops.firewall_state import SnapshotRequest
from tests.firewall_helpers import (
    decision,
    launch,
    stop,
    terminate,
    timeouts,
    wait_for,
    write_config,
)
from tests.netns_helpers import requires_netns

pytestmark = [pytest.mark.netns, requires_netns]


def test_network_survives_restart_and_refuses_bans_inside(ns: str, tmp_path: Path) -> None:
    config, runtime = write_config(tmp_path)
    proc = launch(ns, config, runtime)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.connect(addresses.firewall_decisions(runtime))
    try:
        proc.call(fwo.BAN, BanRequest(ip="203.0.113.70", reason="manual"))
        proc.call(fwo.BAN, BanRequest(ip="2001:db8:5::9", reason="manual"))
        net4 = WhitelistAddRequest(ip="203.0.113.64/26", permanent=True)
        added = proc.call(fwo.WHITELIST_ADD, net4)
        assert added.bansInside == ["203.0.113.70"] and added.liftedBans == []
        net6 = WhitelistAddRequest(ip="2001:db8:5::/48", ttl=3600, lift_bans=True)
        added = proc.call(fwo.WHITELIST_ADD, net6)
        assert added.liftedBans == ["2001:db8:5::9"]
        assert set(timeouts(ns)) == {"203.0.113.70"}
        refused = proc.refusal(fwo.BAN, BanRequest(ip="2001:db8:5::1"))
        assert refused.status == 400 and "whitelisted" in str(refused)
        bad = proc.refusal(fwo.WHITELIST_ADD, WhitelistAddRequest(ip="0.0.0.0/0"))
        assert bad.status == 400
        snapshot = proc.call(fwo.LISTS_SNAPSHOT, SnapshotRequest()).whitelist
        assert sorted(ip for ip, _ in snapshot) == ["2001:db8:5::/48", "203.0.113.64/26"]
        terminate(proc)

        proc = launch(ns, config, runtime)  # restart: the networks come back from the store
        listed = proc.call(fwo.WHITELIST, Empty())
        assert listed["203.0.113.64/26"].permanent is True
        assert listed["2001:db8:5::/48"].permanent is False
        before = proc.call(fwo.STATS, Empty()).refused_trusted
        push.send(encode(decision("w0-9-1", "203.0.113.77", duration=600, worker=0)))
        push.send(encode(decision("w0-9-2", "203.0.113.200", duration=600, worker=0)))
        wait_for(lambda: "203.0.113.200" in timeouts(ns))
        assert proc.call(fwo.STATS, Empty()).refused_trusted == before + 1
        assert "203.0.113.77" not in timeouts(ns)
        assert proc.call(fwo.WHITELIST_GET, IpRequest(ip="203.0.113.77")).whitelisted is True
        proc.call(fwo.WHITELIST_REMOVE, WhitelistRemoveRequest(ip="203.0.113.64/26"))
        push.send(encode(decision("w0-9-3", "203.0.113.77", duration=600, worker=0)))
        wait_for(lambda: "203.0.113.77" in timeouts(ns))
        terminate(proc)
    finally:
        push.close(0)
        stop(proc.popen)
