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
        # network text -> (version, first, last, expires wall time; 0 = permanent)
        self.entries: dict[str, tuple[int, int, int, float]] = {}
        self.skipped = 0
        self._wallclock = wallclock

    def __len__(self) -> int:
        return len(self.entries)

    def on_change(self, change: ListChange) -> bool:
        """Apply a whitelist ListChange if it names a network; False when it does not."""
        net = parse_network(change.ip)
        if net is None:
            return False
        key = str(net)
        if change.op == "add":
            if change.expires > 0 and change.expires <= self._wallclock():
                self.entries.pop(key, None)
            else:
                first = int(net.network_address)
                self.entries[key] = (net.version, first, first + net.num_addresses - 1,
                                     change.expires)  # fmt: skip
        elif change.op == "remove":
            self.entries.pop(key, None)
        return True

    def skip(self, addr: IPAddress) -> bool:
        """Whether `addr` is inside an active whitelisted network (counted)."""
        value = int(addr)
        version = addr.version
        now = 0.0
        for key, (v, first, last, expires) in list(self.entries.items()):
            if v != version or not first <= value <= last:
                continue
            if expires:
                now = now or self._wallclock()
                if expires <= now:
                    del self.entries[key]
                    continue
            self.skipped += 1
            return True
        return False
