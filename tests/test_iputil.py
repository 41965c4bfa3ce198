"""shared.iputil: the fast IPv4 parse and the range-based NetworkSet agree with ipaddress."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.iputil import NetworkSet, normalize_ip, parse_ip, shard_of, shard_of_addr


def _reference(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@pytest.mark.parametrize("text", [
    "1.2.3.4", "01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.5", "256.1.1.1", " 1.2.3.4",
    "1.2.3.4\n", "1.2.3.4\x00", "\u0661.2.3.4", "1..3.4", "0x1.2.3.4", "+1.2.3.4",
    "1.2.3.4/32", "0.0.0.0", "255.255.255.255", "1.2.3.2555", "", "::ffff:1.2.3.4",
])
def test_parse_ip_matches_ipaddress(text: str) -> None:
    expected = _reference(text)
    if text.startswith("::ffff:"):
        expected = "1.2.3.4"  # mapped addresses are unmapped
    assert normalize_ip(text) == expected


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="0123456789.x -", max_size=18))
def test_parse_ip_fuzz_matches_ipaddress(text: str) -> None:
    assert normalize_ip(text) == _reference(text)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789.x -%", max_size=18),
                 st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))))
def test_shard_of_is_the_crc_of_the_parsed_address(text: str) -> None:
    try:
        expected: int | None = shard_of_addr(parse_ip(text), 7)
    except ValueError:
        expected = None
    assert shard_of(text, 7) == expected


def test_shard_of_rejects_what_parse_ip_rejects() -> None:
    assert shard_of("01.2.3.4", 4) is None
    assert shard_of("1.2.3.4", 4) == shard_of("::ffff:1.2.3.4", 4)


NETWORKS = ["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "127.0.0.1", "::1/128", "fc00::/7",
            "::ffff:172.16.0.0/108", "198.51.100.0/25", "198.51.100.128/25"]


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
    st.sampled_from(["10.255.255.255", "11.0.0.0", "172.16.0.1", "172.31.255.255",
                     "172.32.0.0", "198.51.100.127", "198.51.100.255", "198.51.101.0",
                     "127.0.0.2", "::1", "::2", "fdff::1"]).map(ipaddress.ip_address),
))
def test_network_set_matches_ipaddress(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    nets = [ipaddress.ip_network(n, strict=False) for n in NETWORKS]
    nets = [ipaddress.ip_network(f"{n.network_address.ipv4_mapped}/{n.prefixlen - 96}")
            if n.version == 6 and n.network_address.ipv4_mapped else n for n in nets]
    expected = any(addr.version == n.version and addr in n for n in nets)
    assert NetworkSet(NETWORKS).contains(addr) == expected


def test_network_set_rejects_garbage() -> None:
    ns = NetworkSet()
    with pytest.raises(ValueError):
        ns.add("10.0.0.0/33")
    assert not ns.contains_text("not an address")
    assert ns.cidrs == []
