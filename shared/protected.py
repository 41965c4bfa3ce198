"""Addresses fsguard never bans, whatever the configuration and whatever path asks.

Banning one of these cuts fsguard's own host or breaks the network for everyone:
loopback, unspecified ("this network"), multicast, broadcast and link-local addresses,
and the same IPv4 ranges in their IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96)
and 6to4 (2002::/16) IPv6 forms. `never_ban_reason` is pure (no I/O) so workers, the API
and the firewall share it; the firewall adds the addresses only it knows at run time
(the ESL peer, the host's own addresses, the API client of a manual ban).

Untrusted patterns get the matching check: `pattern_problem` refuses a pattern that
covers every address or a trusted network, and asks for `force` for very broad ones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "loopback"),
    ("0.0.0.0/8", "unspecified"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("169.254.0.0/16", "link-local"),
)
_V6: tuple[tuple[str, str], ...] = (
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("ff00::/8", "multicast"),
    ("fe80::/10", "link-local"),
)
# IPv6 forms that carry an IPv4 address: (prefix, bit offset of the embedded address).
_EMBEDDINGS: tuple[tuple[str, str, int], ...] = (
    ("::ffff:0:0/96", "IPv4-mapped", 96),
    ("64:ff9b::/96", "NAT64", 96),
    ("2002::/16", "6to4", 16),
)
BROAD_V4 = 8  # an untrusted IPv4 prefix shorter than this needs `force`
BROAD_V6 = 32


def _embedded(prefix: str, offset: int, net: ipaddress.IPv4Network) -> ipaddress.IPv6Network:
    base = int(ipaddress.IPv6Network(prefix).network_address)
    shift = 128 - offset - 32
    return ipaddress.IPv6Network((base | (int(net.network_address) << shift),
                                  offset + net.prefixlen))  # fmt: skip


def _build() -> list[tuple[IPNetwork, str]]:
    out: list[tuple[IPNetwork, str]] = []
    for text, why in _V4:
        net4 = ipaddress.IPv4Network(text)
        out.append((net4, why))
        for prefix, form, offset in _EMBEDDINGS:
            out.append((_embedded(prefix, offset, net4), f"{why} ({form} form)"))
    out.extend((ipaddress.IPv6Network(text), why) for text, why in _V6)
    return out


PROTECTED: tuple[tuple[IPNetwork, str], ...] = tuple(_build())


def _as_target(value: str | IPAddress | IPNetwork) -> IPAddress | IPNetwork:
    if isinstance(value, str):
        text = value.strip()
        if "/" in text:
            return ipaddress.ip_network(text, strict=False)
        return ipaddress.ip_address(text.split("%", 1)[0])
    return value


_NAT64 = int(ipaddress.IPv6Address("64:ff9b::")) >> 32
_MAPPED = 0xFFFF


def _v4_reason(n: int) -> str | None:
    first = n >> 24
    if first == 127:
        return "loopback"
    if first == 0:
        return "unspecified"
    if n == 0xFFFFFFFF:
        return "broadcast"
    if 224 <= first <= 239:
        return "multicast"
    if n >> 16 == 0xA9FE:
        return "link-local"
    return None


def _address_reason(addr: IPAddress) -> str | None:
    """Constant time: this runs for every ban decision."""
    n = int(addr)
    if addr.version == 4:
        return _v4_reason(n)
    if n >> 120 == 0xFF:
        return "multicast"
    if n >> 118 == 0x3FA:
        return "link-local"
    if n == 1:
        return "loopback"
    if n == 0:
        return "unspecified"
    for form, embedded in (
        ("IPv4-mapped", n & 0xFFFFFFFF if n >> 32 == _MAPPED else None),
        ("NAT64", n & 0xFFFFFFFF if n >> 32 == _NAT64 else None),
        ("6to4", (n >> 80) & 0xFFFFFFFF if n >> 112 == 0x2002 else None),
    ):
        if embedded is not None:
            why = _v4_reason(embedded)
            return None if why is None else f"{why} ({form} form)"
    return None


def never_ban_reason(value: str | IPAddress | IPNetwork) -> str | None:
    """Why this address (or any address of this prefix) must never be banned, or None.
    ValueError for text that is not an address or prefix."""
    target = _as_target(value)
    if isinstance(target, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return _address_reason(target)
    for net, why in PROTECTED:
        if target.version == net.version and target.overlaps(net):
            return why
    return None


def covers(target: IPAddress | IPNetwork, addresses: Iterable[IPAddress]) -> IPAddress | None:
    """The first of `addresses` that `target` is or contains (mapped forms unmapped)."""
    for addr in addresses:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if isinstance(target, ipaddress.IPv4Address | ipaddress.IPv6Address):
            if target == addr:
                return addr
        elif target.version == addr.version and addr in target:
            return addr
    return None


def pattern_problem(
    pattern: str, trusted: Iterable[str], *, force: bool = False
) -> str | None:
    """Why an untrusted pattern must be refused (None: acceptable). Domain patterns are
    always acceptable; an address or CIDR is refused when it covers every address or a
    trusted network, and a very broad prefix needs `force`."""
    try:
        net = ipaddress.ip_network(pattern.strip(), strict=False)
    except ValueError:
        return None  # a domain pattern
    if net.prefixlen == 0:
        return f"{pattern} covers every address"
    for raw in trusted:
        try:
            t = ipaddress.ip_network(raw.strip(), strict=False)
        except ValueError:
            continue
        if t.version == net.version and t.overlaps(net):
            return f"{pattern} covers trusted network {t}"
    broad = BROAD_V4 if net.version == 4 else BROAD_V6
    if net.prefixlen < broad and not force:
        return f"{pattern} is very broad (shorter than /{broad}): pass force to add it"
    return None
