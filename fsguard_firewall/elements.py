"""The kernel element a ban target becomes, shared by both firewall backends."""

from __future__ import annotations

import ipaddress

from .backend import Element, Target


def to_element(target: Target, ipv6_prefix: int) -> Element:
    """The kernel element for `target` (IPv6 aggregated to `ipv6_prefix`).

    IPv4-mapped IPv6 addresses become IPv4. Raises ValueError for an IPv4 network
    wider than one address or an IPv6 network wider than the ban prefix, and
    TypeError for anything that is not an `ipaddress` object.
    """
    if isinstance(target, ipaddress.IPv4Network):
        if target.prefixlen != 32:
            raise ValueError(f"IPv4 networks are not banned as a whole: {target}")
        return target.network_address
    if isinstance(target, ipaddress.IPv4Address):
        return target
    if isinstance(target, ipaddress.IPv6Address):
        if target.ipv4_mapped is not None:
            return target.ipv4_mapped
        if ipv6_prefix == 128:
            return target
        return ipaddress.IPv6Network((target, ipv6_prefix), strict=False)
    if isinstance(target, ipaddress.IPv6Network):
        if target.prefixlen < ipv6_prefix:
            raise ValueError(f"IPv6 prefix {target} is wider than the ban prefix /{ipv6_prefix}")
        if ipv6_prefix == 128:
            return target.network_address
        return ipaddress.IPv6Network((target.network_address, ipv6_prefix), strict=False)
    raise TypeError(f"not an ipaddress object: {type(target).__name__}")
