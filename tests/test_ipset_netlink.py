"""KernelFirewall's netlink path (no ipset process) against the real kernel, in namespaces."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from fsguard_firewall.ipset_netlink import NETLINK_NETFILTER, IpsetNetlink
from fsguard_firewall.kernel import KernelFirewall
from tests.kernel_helpers import check_refused_element_is_reported, kernel_firewall
from tests.netns_helpers import requires_netns, run_in, socket_in

pytestmark = [pytest.mark.netns, requires_netns]

SET = "fsg-nl"


def make_fw(ns: str, **kw: Any) -> KernelFirewall:
    return kernel_firewall(
        ns, SET, netlink=lambda: IpsetNetlink(socket_in(ns, socket.AF_NETLINK, socket.SOCK_RAW,
                                                        NETLINK_NETFILTER)),
        **kw,
    )  # fmt: skip


def saved(ns: str, name: str) -> str:
    return str(run_in(ns, ["ipset", "save", name], check=True).stdout)


def no_ipset_process(fw: KernelFirewall, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(argv: list[str], **kw: Any) -> None:
        raise AssertionError(f"an ipset process ran: {argv}")

    monkeypatch.setattr(fw, "_popen", refuse)


def test_bans_and_unbans_reach_the_kernel_without_a_process(
    ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw = make_fw(ns)
    fw.ensure_setup()
    no_ipset_process(fw, monkeypatch)
    v4 = ipaddress.ip_address("203.0.113.7")
    v6 = ipaddress.ip_address("2001:db8::7")
    assert fw.apply([(v4, 600), (v6, 0)]) == 2
    assert f"add {SET} 203.0.113.7 timeout" in saved(ns, SET)
    assert f"add {SET}-v6 2001:db8::7 timeout 0" in saved(ns, SET + "-v6")
    timeout = dict(fw.list_members())["203.0.113.7"]
    assert 590 < timeout <= 600
    fw.apply([(v4, 99999999)])  # re-add refreshes the timeout (ipset -exist), clamped
    assert dict(fw.list_members())["203.0.113.7"] > 2147000
    # unknown addresses unban without error, like `ipset -exist del`
    assert fw.apply([], unbans=[v4, v6, ipaddress.ip_address("192.0.2.99")]) == 3
    assert not fw.contains(v4)
    assert not fw.contains(v6)


def test_ipv6_prefix_aggregates_over_netlink(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fw = make_fw(ns, ipv6_prefix=64)
    fw.ensure_setup()
    no_ipset_process(fw, monkeypatch)
    fw.apply([(ipaddress.ip_address("2001:db8:1:2::99"), 60)])
    assert f"add {SET}-v6 2001:db8:1:2::/64 timeout" in saved(ns, SET + "-v6")


def test_thousand_bans_in_one_call(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fw = make_fw(ns)
    fw.ensure_setup()
    no_ipset_process(fw, monkeypatch)
    hosts = list(ipaddress.IPv4Network("198.18.0.0/20").hosts())[:3000]
    assert fw.apply([(a, 600) for a in hosts]) == 3000
    members = dict(fw.list_members())
    assert len(members) == 3000
    assert "198.18.11.184" in members


def test_refused_element_is_retried_by_restore_and_reported(ns: str) -> None:
    # no v6 set: the kernel refuses that element; restore retries it and reports it
    check_refused_element_is_reported(make_fw(ns), ns, SET)


def test_no_namespace_socket_means_ipset_restore(ns: str) -> None:
    def broken() -> IpsetNetlink:
        raise OSError("no netlink here")

    fw = KernelFirewall(SET, "INPUT", default_timeout=60,
                        command_prefix=["ip", "netns", "exec", ns], netlink=broken)
    fw.ensure_setup()
    assert fw.apply([(ipaddress.ip_address("192.0.2.5"), 60)]) == 1
    assert fw.contains(ipaddress.ip_address("192.0.2.5"))
