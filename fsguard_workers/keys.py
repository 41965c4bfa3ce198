"""Source keys of the detection engine: an int per source (IPv4: the address; IPv6:
a flag bit plus the address masked to `security.ipv6_ban_prefix`, never aggregated
over a trusted network), and their text forms as the firewall reports them."""

from __future__ import annotations

import ipaddress

from shared.iputil import IPAddress, parse_ip

from .windows import BoundedCache

V6 = 1 << 128
ALL128 = V6 - 1
_V6 = V6
_ALL128 = ALL128


class SourceKeys:
    """Mixin of DetectionEngine (the attributes below are set by the engine)."""

    _prefix: int
    _v6_mask: int
    _trusted_v6: list[ipaddress.IPv6Network]
    _prefix_safe: BoundedCache[int, bool]

    def _key(self, addr: IPAddress) -> int:
        if addr.version == 4:
            return int(addr)
        full = int(addr)
        key = _V6 | (full & self._v6_mask)
        if self._prefix < 128 and self._trusted_v6 and not self._prefix_is_safe(key):
            return _V6 | full  # never aggregate over a trusted network
        return key

    def _prefix_is_safe(self, key: int) -> bool:
        """True when the aggregated IPv6 prefix of `key` overlaps no trusted network."""
        safe = self._prefix_safe.get(key)
        if safe is None:
            net = ipaddress.IPv6Network((key & _ALL128 & self._v6_mask, self._prefix))
            safe = not any(net.overlaps(t) for t in self._trusted_v6)
            self._prefix_safe.put(key, safe)
        return safe

    def _key_text(self, key: int) -> str:
        if key < _V6:
            return str(ipaddress.IPv4Address(key))
        value = key & _ALL128
        if self._prefix < 128 and value == value & self._v6_mask and self._prefix_is_safe(key):
            return f"{ipaddress.IPv6Address(value)}/{self._prefix}"
        return str(ipaddress.IPv6Address(value))

    def _key_of_text(self, value: str) -> int | None:
        """Key of an address or of a prefix as the firewall reports it."""
        value = value.strip()
        try:
            if "/" not in value:
                return self._key(parse_ip(value))
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return None
        if net.prefixlen == net.max_prefixlen:
            return self._key(parse_ip(str(net.network_address)))
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen == self._prefix:
            return _V6 | int(net.network_address)
        return None

