"""IP helpers every process agrees on: normalization, the shard function,
the supervisor's cheap source-IP search, and trusted-network matching."""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Iterable

from ipset_c import IPSet

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress:
    """Parse an address strictly; IPv4-mapped IPv6 is unmapped. Raises ValueError."""
    if not text or len(text) > 45 or "%" in text:
        raise ValueError(f"invalid IP address: {text!r}")
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def normalize_ip(text: str) -> str | None:
    """Canonical text of an address, or None if it is not one."""
    try:
        return str(parse_ip(text))
    except ValueError:
        return None


def shard_of_addr(addr: IPAddress, shards: int) -> int:
    """Stable shard of an address: CRC-32 of its packed bytes (never Python's salted hash)."""
    return zlib.crc32(addr.packed) % shards


def shard_of(text: str, shards: int) -> int | None:
    """Shard of an address given as text, or None if the text is not an address."""
    try:
        return shard_of_addr(parse_ip(text), shards)
    except ValueError:
        return None


# Headers that carry the transport source address, in the order they are searched.
# sofia::* events: network-ip; sofia::wrong_call_state: network_ip; CHANNEL_*: the other two.
SOURCE_IP_KEYS: tuple[bytes, ...] = (
    b'"network-ip":"',
    b'"network_ip":"',
    b'"Caller-Network-Addr":"',
    b'"variable_sip_network_ip":"',
)


def find_source_ip(body: bytes) -> bytes | None:
    """Cheap search of a JSON event body for the source-IP value (no JSON parse).

    Returns the raw bytes of the value, unvalidated, or None. The first key found
    in SOURCE_IP_KEYS order wins. A value holding an escape is rejected: addresses
    never contain a backslash.
    """
    for key in SOURCE_IP_KEYS:
        start = body.find(key)
        if start >= 0:
            start += len(key)
            end = body.find(b'"', start)
            if end < 0 or end - start > 45:
                return None
            value = body[start:end]
            if b"\\" in value:
                return None
            return value
    return None


class NetworkSet:
    """Membership test against a list of CIDRs (IPv4 and IPv6), backed by ipset-c.

    ipset-c must not mix families in one set, so there is one set per family.
    """

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self._v4 = IPSet([])
        self._v6 = IPSet([])
        self.cidrs: list[str] = []
        for cidr in cidrs:
            self.add(cidr)

    def add(self, cidr: str) -> None:
        """Add a CIDR or a bare address. Raises ValueError when it is neither."""
        net = ipaddress.ip_network(cidr.strip(), strict=False)
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
            mapped = net.network_address.ipv4_mapped
            if mapped is not None:
                net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            self._v4.addCidr(str(net))
        else:
            self._v6.addCidr(str(net))
        self.cidrs.append(str(net))

    def contains(self, addr: IPAddress) -> bool:
        if addr.version == 4:
            return bool(self._v4.isContainsCidr(f"{addr}/32"))
        return bool(self._v6.isContainsCidr(f"{addr}/128"))

    def contains_text(self, text: str) -> bool:
        try:
            return self.contains(parse_ip(text))
        except ValueError:
            return False
