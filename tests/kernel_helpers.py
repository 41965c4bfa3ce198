"""What the ipset backend's tests share, over `ipset restore` (test_firewall_kernel) and
over netlink (test_ipset_netlink): the backend in a namespace, and the checks both
paths must pass."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from fsguard_firewall.kernel import FirewallError, KernelFirewall
from tests.netns_helpers import run_in


def kernel_firewall(ns: str, set_name: str, **kw: Any) -> KernelFirewall:
    """A KernelFirewall on chain INPUT whose ipset/iptables commands run inside `ns`."""
    return KernelFirewall(
        set_name, "INPUT", default_timeout=3600, command_prefix=["ip", "netns", "exec", ns], **kw
    )


def check_refused_element_is_reported(
    fw: KernelFirewall, ns: str, set_name: str, landed: tuple[str, ...] = ("192.0.2.1", "192.0.2.2")
) -> None:
    """Only the v4 set exists: the kernel refuses the v6 element between two v4 ones; it
    is reported (not silent), two lines count as applied, and the `landed` ones are in
    the kernel."""
    run_in(ns, ["ipset", "create", set_name, "hash:ip", "timeout", "100"], check=True)
    bans = [
        (ipaddress.ip_address("192.0.2.1"), 60),
        (ipaddress.ip_address("2001:db8::1"), 60),
        (ipaddress.ip_address("192.0.2.2"), 60),
    ]
    with pytest.raises(FirewallError) as info:
        fw.apply(bans)
    assert [elem for elem, _ in info.value.failed] == ["2001:db8::1"]
    assert info.value.applied == 2
    for ip in landed:
        assert fw.contains(ipaddress.ip_address(ip)), ip
