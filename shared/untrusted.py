"""`security.untrusted_networks` entries: SIP domains (exact or `*.suffix`) and CIDRs.

Used by the workers' engine (untrusted_domain / untrusted_network rules) and by the
firewall (the `untrusted` list op checks and normalizes the entries it stores).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from shared.iputil import IPAddress, NetworkSet


def normalize_domain(host: str) -> str:
    """Lower-case SIP host without a trailing dot or a :port (IPv6 literals kept)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host


class UntrustedMatcher:
    """`security.untrusted_networks`: SIP domains (exact or `*.suffix`) and CIDRs.

    Domains compare case-insensitively. `*.example.com` matches any subdomain
    of example.com, not example.com itself. An entry that parses as an address
    or a CIDR also matches the event's source address.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self._exact: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.nets = NetworkSet()
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                net = None
            if net is not None:
                self.nets.add(entry)
                self._networks.append(net)
                self._exact.add(entry)  # the Go program compared the string to the domain
            elif entry.startswith("*."):
                self._suffixes.append(entry[1:])  # ".example.com"
            else:
                self._exact.add(entry)
        self.has_networks = bool(self._networks)
        self.has_domains = bool(self._exact or self._suffixes)

    def domain(self, host: str) -> str:
        """The normalized domain when it is untrusted, else ""."""
        if not host or not self.has_domains:
            return ""
        domain = normalize_domain(host)
        if domain in self._exact:
            return domain
        for suffix in self._suffixes:
            if domain.endswith(suffix):
                return domain
        return ""

    def network(self, addr: IPAddress) -> str:
        """The untrusted network containing the address, else ""."""
        if not self.has_networks or not self.nets.contains(addr):
            return ""
        for net in self._networks:
            if addr.version == net.version and addr in net:
                return str(net)
        return str(addr)  # unreachable in practice: NetworkSet agreed
