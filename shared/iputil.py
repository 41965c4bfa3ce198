"""IP helpers every process agrees on: normalization, the shard function,
the supervisor's cheap source-IP search, and trusted-network matching."""

from __future__ import annotations

import bisect
import ipaddress
import socket
import zlib
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_V4 = ipaddress.IPv4Address
_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET


def parse_ip(text: str) -> IPAddress:
    """Parse an address strictly; IPv4-mapped IPv6 is unmapped. Raises ValueError."""
    if not text or len(text) > 45 or "%" in text:
        raise ValueError(f"invalid IP address: {text!r}")
    if ":" not in text:
        # Dotted quad: inet_pton is as strict as ipaddress (4 decimal octets <= 255, no
        # leading zeros, ASCII digits only) and ~10x faster; a spoofed flood is all new
        # addresses, each parsed once per process.
        try:
            return _V4(_inet_pton(_AF_INET, text))
        except (OSError, UnicodeEncodeError, ValueError):
            raise ValueError(f"invalid IP address: {text!r}") from None
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
    if ":" not in text:  # dotted quad: inet_pton's bytes are what .packed would give
        try:
            return zlib.crc32(_inet_pton(_AF_INET, text)) % shards
        except (OSError, UnicodeEncodeError, ValueError):
            return None
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


_CHANNEL_KEYS = SOURCE_IP_KEYS[2:]
_CHANNEL_NAME = b'"Event-Name":"CHANNEL_'


def find_source_ip(body: bytes) -> bytes | None:
    """Cheap search of a JSON event body for the source-IP value (no JSON parse).

    Returns the raw bytes of the value, unvalidated, or None. The first key found
    in SOURCE_IP_KEYS order wins. A value holding an escape is rejected: addresses
    never contain a backslash. CHANNEL_* events (Event-Name among their first headers)
    carry only Caller-* / variable_* keys, so the two sofia keys are not searched for
    in them: each miss is a scan of a 2-9 KB body.
    """
    keys = _CHANNEL_KEYS if body.find(_CHANNEL_NAME, 0, 512) >= 0 else SOURCE_IP_KEYS
    for key in keys:
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
    """Membership test against a list of CIDRs (IPv4 and IPv6).

    Kept as merged, sorted integer ranges per family: a lookup is one bisect on the
    address's integer (no text formatting), which matters on a per-new-source path.
    """

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
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
        version = net.version
        spans = sorted([*zip(self._starts[version], self._ends[version], strict=True),
                        (int(net.network_address), int(net.broadcast_address))])
        starts: list[int] = []
        ends: list[int] = []
        for lo, hi in spans:
            if ends and lo <= ends[-1] + 1:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
        self._starts[version] = starts
        self._ends[version] = ends
        self.cidrs.append(str(net))

    def contains(self, addr: IPAddress) -> bool:
        value = int(addr)
        version = addr.version
        i = bisect.bisect_right(self._starts[version], value) - 1
        return i >= 0 and value <= self._ends[version][i]

    def contains_text(self, text: str) -> bool:
        try:
            return self.contains(parse_ip(text))
        except ValueError:
            return False
