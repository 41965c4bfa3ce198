"""Requests to the bare IP: the To / Request-URI host is an IP literal instead of a
configured SIP domain (what scanners that sweep address ranges send; FusionPBX's
Event Guard blocks them). Off by default (`security.rules.bare_ip.mode`): phones set
up with the server's address as their domain trip it. `security.bare_ip.allowed_hosts`
lists the addresses (or CIDRs) that are acceptable request hosts.

Header facts (freeswitch-real-events.md 3): in pre_register / register_attempt the
`from-host` header holds the To / Request-URI host (names are swapped); in
register_failure `to-host` is it; CHANNEL_CREATE has `variable_sip_req_host`.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.iputil import NetworkSet, parse_ip

from ..windows import BoundedCache
from .matchers import normalize_domain
from .reasons import clip

BARE_IP = "bare_ip"


class BareIpMatcher:
    """The request host when it is an IP literal that is not allowed, else ""."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = NetworkSet()
        for entry in allowed:
            self._allowed.add(entry)
        self._cache: BoundedCache[str, str] = BoundedCache(4096)

    def match(self, host: str) -> str:
        if not host:
            return ""
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = self._judge(host)
            self._cache.put(host, verdict)
        return verdict

    def _judge(self, host: str) -> str:
        literal = normalize_domain(host)
        if not literal or not (literal[0].isdigit() or ":" in literal):
            return ""
        try:
            addr = parse_ip(literal)
        except ValueError:
            return ""
        return "" if self._allowed.contains(addr) else str(addr)


def reason_bare_ip(host: str) -> str:
    return f'Request to the bare IP "{clip(host)}" instead of a SIP domain'
