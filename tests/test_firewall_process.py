"""The firewall process for real: `ip netns exec <ns> python -m fsguard_firewall`.

Its ipc sockets are files in a tmp runtime dir, so this test process (outside the
namespace) talks to it over real ZeroMQ sockets; the kernel side is checked with
ipset/iptables inside the namespace.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import zmq

from shared import addresses
from shared.messages import (
    ListChange,
    decode,
    encode,
)
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from shared.ops.firewall_bans import BanRequest, IpRequest, UnbanRequest
from tests.firewall_helpers import (
    SET,
    Proc,
    decision,
    exit_and_output,
    run_to_exit,
    running_firewall,
    wait_for,
    write_config,
)
from tests.netns_helpers import requires_netns, run_in

pytestmark = [pytest.mark.netns, requires_netns]


def test_decisions_control_ops_and_clean_exit(fw_proc: Proc) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(addresses.firewall_lists(fw_proc.runtime))
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(addresses.firewall_decisions(fw_proc.runtime))
    time.sleep(0.2)  # SUB joins before the first publication
    try:
        now = time.time()
        msgs = [
            decision("w0-1", "203.0.113.7", event_ts=now),
            decision("w0-2", "2001:db8::7", duration=0, event_ts=now),
            decision("w0-3", "::ffff:198.51.100.4", reason="x\ninjected line"),  # unmapped
            decision("w0-4", "10.1.2.3"),  # trusted
            decision("w0-5", "2001:db8:ffff::1"),  # trusted (IPv6)
            decision("w0-1", "203.0.113.7"),  # same decision id again
            decision("w1-9", "203.0.113.7", duration=7200),  # already banned: not re-applied
            decision("w0-6", "not-an-ip"),
            decision("w0-7", "192.0.2.0/24"),  # IPv4 prefixes are refused
        ]
        for m in msgs:
            push.send(encode(m))
        push.send(b"\xc1garbage")
        wait_for(lambda: fw_proc.call(fwo.STATS, Empty()).decisions_received == len(msgs))
        stats = fw_proc.call(fwo.STATS, Empty())
        assert stats.bans_applied == 3
        assert stats.duplicates == 2
        assert stats.refused_trusted == 2
        assert stats.invalid == 2
        assert stats.decode_errors == 1
        assert stats.kernel_errors == 0
        assert (stats.active_bans.ipv4, stats.active_bans.ipv6) == (2, 1)
        assert stats.ban_latency_p50 is not None and stats.ban_latency_p50 >= 0
        assert fw_proc.members() == {
            "203.0.113.7": SET, "198.51.100.4": SET, "2001:db8::7": SET + "-v6",
        }  # fmt: skip

        # A re-sent decision for an address already banned is not re-applied.
        push.send(encode(decision("w2-1", "198.51.100.4")))
        wait_for(lambda: fw_proc.call(fwo.STATS, Empty()).decisions_received == len(msgs) + 1)
        assert fw_proc.call(fwo.STATS, Empty()).duplicates == 3
        assert fw_proc.call(fwo.STATS, Empty()).bans_applied == 3
        # ... except to upgrade it to permanent.
        push.send(encode(decision("w2-2", "198.51.100.4", duration=0)))
        wait_for(lambda: fw_proc.call(fwo.STATS, Empty()).bans_applied == 4)
        assert ("198.51.100.4", 0) in _timeouts(fw_proc.ns)

        changes = []
        while sub.poll(200):
            msg = decode(sub.recv())
            assert isinstance(msg, ListChange)
            changes.append((msg.list, msg.op, msg.ip))
        assert sorted(changes) == sorted(
            ("blacklist", "add", ip)
            for ip in ("203.0.113.7", "2001:db8::7", "198.51.100.4", "198.51.100.4")
        )

        status = fw_proc.call(fwo.STATUS, Empty())
        assert (status.blacklistCount, status.whitelistCount) == (3, 0)
        bl = fw_proc.call(fwo.BLACKLIST, Empty())
        assert set(bl) == {"203.0.113.7", "2001:db8::7", "198.51.100.4"}
        entry = bl["203.0.113.7"]
        assert entry.reason == "Exceeded max failed registrations (5)"
        assert entry.permanent is False and entry.failCount == 5
        assert entry.addedAt.endswith("Z") and entry.expiresAt.endswith("Z")
        assert bl["2001:db8::7"].permanent is True
        assert fw_proc.call(fwo.BLACKLIST_GET, IpRequest(ip="203.0.113.7")).blacklisted is True
        assert fw_proc.call(fwo.BLACKLIST_GET, IpRequest(ip="203.0.113.8")).blacklisted is False
        ipt = fw_proc.call(fwo.IPTABLES, Empty())
        assert ipt.chain == "INPUT" and ipt.ipset == SET and ipt.count == 3
        assert sorted(ipt.blockedIps or []) == sorted(bl)

        # Manual bans through the control socket.
        bad = fw_proc.refusal(fwo.BAN, BanRequest(ip="1.2.3.999"))
        assert (bad.status, str(bad)) == (400, "invalid IP address: 1.2.3.999")
        trusted = fw_proc.refusal(fwo.BAN, BanRequest(ip="10.9.9.9", reason="x"))
        assert trusted.status == 400
        assert str(trusted) == "cannot blacklist IP in trusted network: 10.9.9.9"
        fw_proc.call(fwo.BAN, BanRequest(ip="192.0.2.77", reason="manual", permanent=True))
        assert fw_proc.members()["192.0.2.77"] == SET  # answered after the kernel apply
        save = run_in(fw_proc.ns, ["ipset", "save", SET], check=True).stdout
        assert f"add {SET} 192.0.2.77 timeout 0" in save
        fw_proc.call(fwo.BAN, BanRequest(ip="192.0.2.78", duration=30))
        assert 0 < dict(_timeouts(fw_proc.ns))["192.0.2.78"] <= 30

        # Unban.
        missing = fw_proc.refusal(fwo.UNBAN, UnbanRequest(ip="192.0.2.200"))
        assert missing.status == 404
        fw_proc.call(fwo.UNBAN, UnbanRequest(ip="203.0.113.7"))
        assert "203.0.113.7" not in fw_proc.members()
        assert fw_proc.call(fwo.BLACKLIST_GET, IpRequest(ip="203.0.113.7")).blacklisted is False

        rules = run_in(fw_proc.ns, ["iptables", "-S", "INPUT"], check=True).stdout
        assert rules.count(f"--match-set {SET} src -j DROP") == 1
        rules6 = run_in(fw_proc.ns, ["ip6tables", "-S", "INPUT"], check=True).stdout
        assert rules6.count(f"--match-set {SET}-v6 src -j DROP") == 1
    finally:
        push.close(0)
        sub.close(0)

    # SIGTERM: exit 0 quickly and remove the ipc socket files.
    fw_proc.popen.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code, output = exit_and_output(fw_proc.popen, 5)
    assert code == 0
    print(f"exit after SIGTERM: {time.monotonic() - t0:.3f}s")
    assert "banned ip=198.51.100.4" in output
    assert not any(line.startswith("injected") for line in output.splitlines())
    assert sorted(os.listdir(fw_proc.runtime)) == []
    assert fw_proc.members()["192.0.2.77"] == SET  # bans stay in the kernel


def _timeouts(ns: str) -> list[tuple[str, int]]:
    out = run_in(ns, ["ipset", "save", SET], check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("add ")]
    return [(r[2], int(r[4])) for r in rows]


def test_restart_keeps_kernel_bans_and_dedupes(ns: str, tmp_path: Path) -> None:
    """Foreign kernel entries are kept with keep_foreign_entries (never flushed); a
    decision re-sent after a restart is a duplicate (its id is in the durable store)."""
    config, runtime = write_config(tmp_path, keep_foreign_entries=True)
    run_in(ns, ["ipset", "create", SET, "hash:ip", "timeout", "3600"], check=True)
    run_in(ns, ["ipset", "add", SET, "203.0.113.50", "timeout", "0"], check=True)
    for attempt in range(2):
        with running_firewall(ns, config, runtime) as proc:
            push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
            push.connect(addresses.firewall_decisions(runtime))
            push.send(encode(decision("x-1", "203.0.113.51")))

            def received(p: Proc = proc) -> bool:
                return bool(p.call(fwo.STATS, Empty()).decisions_received == 1)

            wait_for(received)
            push.close(0)
            assert proc.call(fwo.STATS, Empty()).duplicates == attempt
            lookup = proc.call(fwo.BLACKLIST_GET, IpRequest(ip="203.0.113.51"))
            assert lookup.blacklisted is True
            assert ("203.0.113.50", 0) in _timeouts(ns)  # never flushed, still permanent
            proc.popen.send_signal(signal.SIGINT)
            assert proc.popen.wait(5) == 0


def test_dry_run_process_touches_no_kernel(ns: str, tmp_path: Path) -> None:
    config, runtime = write_config(tmp_path, dry_run=True)
    with running_firewall(ns, config, runtime) as proc:
        proc.call(fwo.BAN, BanRequest(ip="203.0.113.9"))
        ipt = proc.call(fwo.IPTABLES, Empty())
        assert ipt.blockedIps == ["203.0.113.9"]
        assert run_in(ns, ["ipset", "list", "-name"], check=True).stdout.strip() == ""
        assert "match-set" not in run_in(ns, ["iptables", "-S"], check=True).stdout
        proc.popen.send_signal(signal.SIGTERM)
        code, output = exit_and_output(proc.popen, 5)
        assert code == 0
        assert "DRY RUN: would" in output


def test_setup_failure_exits_nonzero(ns: str, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, iptables_chain="NOSUCHCHAIN")
    code, output = run_to_exit(ns, config, 10)
    assert code == 1
    assert "firewall setup failed" in output and "NOSUCHCHAIN" in output


def test_aggregation_never_covers_a_trusted_address() -> None:
    """In-process (dry-run kernel): the aggregated /64 is what is checked against trusted."""
    from fsguard_firewall.process import Firewall, make_kernel
    from shared.config import Config, SecurityConfig

    config = Config(
        security=SecurityConfig(
            dry_run=True, ipv6_ban_prefix=64, trusted_networks=["2001:db8:ffff::1/128"]
        )
    )
    fw = Firewall(config, make_kernel(config))
    fw.handle_batch(
        [
            decision("a", "2001:db8:ffff::5"),  # its /64 contains a trusted address
            decision("b", "::/0"),  # wider than the ban prefix
            decision("c", "2001:db8:1::/48"),  # wider than the ban prefix
            decision("d", "2001:db8:2::9"),
            decision("e", "2001:db8:2::10"),  # same /64 as d
        ]
    )
    assert (fw.stats.refused_trusted, fw.stats.invalid, fw.stats.duplicates) == (1, 2, 1)
    assert list(fw.control.op_blacklist(Empty())) == ["2001:db8:2::/64"]
    assert fw.control.op_blacklist_get(IpRequest(ip="2001:db8:2::abcd")).blacklisted is True


def test_second_instance_refuses_to_start(fw_proc: Proc, tmp_path: Path) -> None:
    config = tmp_path / "config.json"  # the fixture's config, same runtime dir
    code, _ = run_to_exit(fw_proc.ns, config, 10)
    assert code == 1
    assert fw_proc.call(fwo.PING, Empty()).pid == fw_proc.popen.pid
