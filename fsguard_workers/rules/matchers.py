"""Matchers built from the config: scanner User-Agents, untrusted domains and
networks, toll-fraud destinations. Stateless; the engine keeps the per-source state."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from shared.config import TollFraudConfig
from shared.iputil import IPAddress, NetworkSet

from ..windows import BoundedCache

# --- matchers -----------------------------------------------------------------------


class ScannerMatcher:
    """Case-insensitive match of whole tokens of known scanner User-Agents.

    A pattern matches when it is not glued to a letter or digit on its left nor
    to a letter on its right: "sipcli" matches "sipcli/v1.8", "smap" does not
    match "Bsmapx", "iwar" does not match "Kiwari". Verdicts are memoised per
    User-Agent string (bounded), since a handful of UAs make most traffic.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        words = sorted({p.strip().lower() for p in patterns if p.strip()}, key=len, reverse=True)
        self._regex = (
            re.compile(
                r"(?<![a-z0-9])(?:" + "|".join(re.escape(w) for w in words) + r")(?![a-z])",
                re.IGNORECASE,
            )
            if words
            else None
        )
        self._cache: BoundedCache[str, str] = BoundedCache(4096)

    def match(self, user_agent: str) -> str:
        """The matched pattern (lower case), or "" when the UA is not a scanner."""
        if self._regex is None or not user_agent:
            return ""
        verdict = self._cache.get(user_agent)
        if verdict is None:
            found = self._regex.search(user_agent)
            verdict = found.group(0).lower() if found else ""
            self._cache.put(user_agent, verdict)
        return verdict


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


class TollFraudMatcher:
    """Unauthenticated calls on watched profiles/contexts to denied prefixes."""

    def __init__(self, cfg: TollFraudConfig) -> None:
        self.enabled = cfg.enabled and bool(cfg.deny_prefixes)
        self._profiles = frozenset(p.lower() for p in cfg.watch_profiles)
        self._contexts = frozenset(c.lower() for c in cfg.watch_contexts)
        self._prefixes = tuple(p for p in cfg.deny_prefixes if p)

    def match(self, profile: str, context: str, destination: str, authorized: str) -> bool:
        if not self.enabled or authorized.lower() == "true":
            return False
        if profile.lower() not in self._profiles and context.lower() not in self._contexts:
            return False
        return destination.strip().startswith(self._prefixes)


