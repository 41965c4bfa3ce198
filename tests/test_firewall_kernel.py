"""KernelFirewall against the real kernel, each test inside its own network namespace."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from fsguard_firewall.kernel import FirewallError, KernelFirewall
from tests.kernel_helpers import check_refused_element_is_reported, kernel_firewall
from tests.netns_helpers import netns, requires_netns, run_in, socket_in, udp_reaches, veth_pair

pytestmark = [pytest.mark.netns, requires_netns]

SET = "fsg-test"


def make_fw(ns: str, **kw: Any) -> KernelFirewall:
    return kernel_firewall(ns, SET, **kw)


def rules(ns: str, binary: str) -> list[str]:
    out = run_in(ns, [binary, "-S", "INPUT"], check=True).stdout
    return [line for line in out.splitlines() if "match-set" in line]


def test_socket_in_stays_in_namespace(ns: str) -> None:
    run_in(ns, ["ip", "addr", "add", "198.51.100.5/32", "dev", "lo"], check=True)
    sock = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("198.51.100.5", 0))  # the address exists only inside ns
    finally:
        sock.close()
    host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(OSError):
            host.bind(("198.51.100.5", 0))
    finally:
        host.close()


def test_ensure_setup_is_idempotent_one_rule_per_family(ns: str) -> None:
    fw = make_fw(ns)
    fw.ensure_setup()
    fw.ensure_setup()
    sets = run_in(ns, ["ipset", "list", "-name"], check=True).stdout.split()
    assert sorted(sets) == [SET, SET + "-v6"]
    v4 = rules(ns, "iptables")
    v6 = rules(ns, "ip6tables")
    assert v4 == [f"-A INPUT -m set --match-set {SET} src -j DROP"]
    assert v6 == [f"-A INPUT -m set --match-set {SET}-v6 src -j DROP"]
    header = run_in(ns, ["ipset", "list", "-t", SET + "-v6"], check=True).stdout
    assert "family inet6" in header and "Type: hash:ip" in header


def test_ipv6_prefix_uses_hash_net_and_aggregates(ns: str) -> None:
    fw = make_fw(ns, ipv6_prefix=64)
    fw.ensure_setup()
    header = run_in(ns, ["ipset", "list", "-t", SET + "-v6"], check=True).stdout
    assert "Type: hash:net" in header
    fw.apply([(ipaddress.ip_address("2001:db8:1:2::99"), 60)])
    assert [m for m, _ in fw.list_members()] == ["2001:db8:1:2::/64"]
    assert fw.contains(ipaddress.ip_address("2001:db8:1:2::1"))
    assert not fw.contains(ipaddress.ip_address("2001:db8:1:3::1"))
    with pytest.raises(ValueError):
        fw.apply([(ipaddress.ip_network("2001:db8::/48"), 60)])


def test_existing_set_and_member_survive_setup(ns: str) -> None:
    run_in(ns, ["ipset", "create", SET, "hash:ip", "timeout", "100"], check=True)
    run_in(ns, ["ipset", "add", SET, "192.0.2.50", "timeout", "0"], check=True)
    fw = make_fw(ns)
    fw.ensure_setup()
    assert fw.contains(ipaddress.ip_address("192.0.2.50"))
    assert ("192.0.2.50", 0) in fw.list_members()


def test_batch_of_1000_in_one_restore(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fw = make_fw(ns)
    fw.ensure_setup()
    calls: list[list[str]] = []
    real_run = fw._run

    def counting_run(
        argv: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return real_run(argv, stdin=stdin, check=check)

    real_popen = fw._popen

    def counting_popen(argv: Sequence[str]) -> subprocess.Popen[str]:
        calls.append(list(argv))
        return real_popen(argv)

    monkeypatch.setattr(fw, "_run", counting_run)
    monkeypatch.setattr(fw, "_popen", counting_popen)
    net = ipaddress.IPv4Network("198.18.0.0/22")
    bans: list[tuple[ipaddress.IPv4Address, int]] = [(a, 600) for a in list(net.hosts())[:1000]]
    assert fw.apply(bans) == 1000
    assert [c[:2] for c in calls] == [["ipset", "restore"]]
    members = dict(fw.list_members())
    assert len(members) == 1000
    assert all(0 < t <= 600 for t in members.values())
    assert "198.18.0.1" in members


def test_ipv6_goes_to_v6_set_permanent_and_unban(ns: str) -> None:
    fw = make_fw(ns)
    fw.ensure_setup()
    v6 = ipaddress.ip_address("2001:db8::7")
    v4 = ipaddress.ip_address("203.0.113.7")
    fw.apply([(v6, 0), (v4, 99999999)])
    v6_members = run_in(ns, ["ipset", "save", SET + "-v6"], check=True).stdout
    assert f"add {SET}-v6 2001:db8::7 timeout 0" in v6_members
    v4_members = dict(fw.list_members())
    assert 2147000 < v4_members["203.0.113.7"] <= 2147483  # clamped to ipset's max
    fw.apply([], unbans=[v6, ipaddress.ip_address("2001:db8::8")])  # unknown: no error
    assert not fw.contains(v6)
    assert fw.contains(v4)


def test_invalid_address_never_reaches_ipset(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fw = make_fw(ns)
    fw.ensure_setup()
    calls: list[object] = []
    monkeypatch.setattr(fw, "_run", lambda *a, **k: calls.append(a))
    with pytest.raises((TypeError, ValueError)):
        # deliberately ill-typed: the runtime check for callers that bypass typing is tested
        fw.apply([("1.2.3.4\nflush fsg-test", 60)])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        fw.apply([(ipaddress.ip_network("10.0.0.0/8"), 60)])
    with pytest.raises(ValueError):
        fw.apply([(ipaddress.ip_address("192.0.2.1"), -5)])
    assert calls == []


def test_failing_line_is_reported_and_the_lines_around_it_land(ns: str) -> None:
    # no v6 set: the v6 line fails; ipset 7.17 then drops its whole batch, so the lines
    # before it must be sent again, and the line after it must land too
    check_refused_element_is_reported(make_fw(ns), ns, SET)


def test_missing_binary_is_a_clear_error(ns: str) -> None:
    fw = KernelFirewall(
        SET, "INPUT", default_timeout=60, command_prefix=["/nonexistent/wrapper", ns]
    )
    with pytest.raises(FirewallError, match="install"):
        fw.ensure_setup()


def test_dry_run_executes_nothing(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fw = make_fw(ns, dry_run=True)
    fw.ensure_setup()
    fw.apply([(ipaddress.ip_address("203.0.113.7"), 60), (ipaddress.ip_address("2001:db8::1"), 0)])
    assert sorted(m for m, _ in fw.list_members()) == ["2001:db8::1", "203.0.113.7"]
    assert fw.contains(ipaddress.ip_address("203.0.113.7"))
    assert run_in(ns, ["ipset", "list", "-name"], check=True).stdout.strip() == ""
    assert rules(ns, "iptables") == []


def test_real_drop_between_namespaces() -> None:
    with netns("srv") as srv, netns("atk") as atk:
        veth_pair(srv, "203.0.113.1/24", atk, ["203.0.113.7/24", "203.0.113.9/24"])
        assert udp_reaches(atk, "203.0.113.7", srv, "203.0.113.1", 5060)
        fw = make_fw(srv)
        fw.ensure_setup()
        fw.apply([(ipaddress.ip_address("203.0.113.7"), 60)])
        assert not udp_reaches(atk, "203.0.113.7", srv, "203.0.113.1", 5060)
        assert udp_reaches(atk, "203.0.113.9", srv, "203.0.113.1", 5060)
        fw.apply([], unbans=[ipaddress.ip_address("203.0.113.7")])
        assert udp_reaches(atk, "203.0.113.7", srv, "203.0.113.1", 5060)


def test_real_drop_ipv6() -> None:
    with netns("srv6") as srv, netns("atk6") as atk:
        veth_pair(srv, "2001:db8::1/64", atk, ["2001:db8::7/64", "2001:db8::9/64"])
        fw = make_fw(srv)
        fw.ensure_setup()
        fw.apply([(ipaddress.ip_address("2001:db8::7"), 60)])
        assert udp_reaches(atk, "2001:db8::9", srv, "2001:db8::1", 5060)
        assert not udp_reaches(atk, "2001:db8::7", srv, "2001:db8::1", 5060)
