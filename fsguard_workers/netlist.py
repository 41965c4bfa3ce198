"""Whitelisted networks (a manual whitelist entry with a prefix, e.g. 198.51.100.0/24).

The firewall owns the whitelist and broadcasts each entry as a ListChange; an entry whose
`ip` is a network shorter than a full address lands here. A source inside an active
network is skipped by the engine like a trusted one: no counting, no ban, no call kill.
Entries are few (operator-made), so a lookup is a scan of integer ranges.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from shared.iputil import IPAddress
from shared.messages import ListChange


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network of a whitelist entry that is a real prefix, else None (an address)."""
    if "/" not in text:
        return None
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    return None if net.prefixlen == net.max_prefixlen else net


class NetworkWhitelist:
    def __init__(self, wallclock: Callable[[], float] = time.time) -> None:
        # network text -> (version, prefix length, network as int, expires wall time; 0 = never)
        self.entries: dict[str, tuple[int, int, int, float]] = {}
        # lookup index, rebuilt on change: version -> [(mask, {network int: expires})], one
        # dict per prefix length, so a lookup costs one AND and one dict get per length
        self._index: dict[int, list[tuple[int, dict[int, float]]]] = {}
        self.skipped = 0
        self._wallclock = wallclock

    def __len__(self) -> int:
        return len(self.entries)

    def _rebuild(self) -> None:
        index: dict[int, dict[int, dict[int, float]]] = {}
        for version, length, first, expires in self.entries.values():
            index.setdefault(version, {}).setdefault(length, {})[first] = expires
        self._index = {
            version: [(_mask(version, length), nets) for length, nets in sorted(by_len.items())]
            for version, by_len in index.items()
        }

    def on_change(self, change: ListChange) -> bool:
        """Apply a whitelist ListChange if it names a network; False when it does not."""
        net = parse_network(change.ip)
        if net is None:
            return False
        key = str(net)
        if change.op == "add" and not (0 < change.expires <= self._wallclock()):
            self.entries[key] = (net.version, net.prefixlen, int(net.network_address),
                                 change.expires)  # fmt: skip
        elif change.op in ("add", "remove"):
            self.entries.pop(key, None)
        self._rebuild()
        return True

    def skip(self, addr: IPAddress) -> bool:
        """Whether `addr` is inside an active whitelisted network (counted)."""
        masks = self._index.get(addr.version)
        if not masks:
            return False
        value = int(addr)
        for mask, nets in masks:
            expires = nets.get(value & mask)
            if expires is None:
                continue
            if expires and expires <= self._wallclock():
                self._expire()
                return self.skip(addr)
            self.skipped += 1
            return True
        return False

    def _expire(self) -> None:
        now = self._wallclock()
        for key in [k for k, e in self.entries.items() if e[3] and e[3] <= now]:
            del self.entries[key]
        self._rebuild()


def _mask(version: int, length: int) -> int:
    bits = 32 if version == 4 else 128
    return ((1 << length) - 1) << (bits - length)
