"""The firewall's last gate: addresses no ban may cover, whatever path asks.

Static classes come from shared.protected (loopback, link-local, multicast ...); this
adds what only the running firewall knows: the ESL peer (`security.esl_host`, resolved),
the host's own addresses (read at start and every REFRESH_SECONDS from `ip -j addr`, in
the firewall's own network namespace) and, for a manual ban, the API client's address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import subprocess
import time
from collections.abc import Iterable

from shared.protected import IPAddress, IPNetwork, covers, never_ban_reason

log = logging.getLogger("fsguard.firewall")

REFRESH_SECONDS = 60.0


def _parse(text: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def host_addresses() -> list[IPAddress]:
    """Every address configured on this network namespace's interfaces."""
    proc = subprocess.run(
        ["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5, check=False
    )
    if proc.returncode != 0:
        raise OSError(proc.stderr.strip() or f"ip addr exited {proc.returncode}")
    out: list[IPAddress] = []
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            addr = _parse(str(info.get("local", "")))
            if addr is not None:
                out.append(addr)
    return out


def resolve(host: str) -> list[IPAddress]:
    """The addresses of a host name or literal (empty when it does not resolve)."""
    literal = _parse(host.strip("[]"))
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    found = [_parse(str(info[4][0])) for info in infos]
    return [a for a in found if a is not None]


class SelfProtection:
    def __init__(self, esl_host: str, *, read_host: bool = True) -> None:
        self.esl_host = esl_host
        self.read_host = read_host
        self.peer: list[IPAddress] = []
        self.own: list[IPAddress] = []
        self._fixed: frozenset[IPAddress] = frozenset()  # peer + own, for O(1) lookups
        self._next = 0.0
        self.refresh()

    def refresh(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + REFRESH_SECONDS
        peer = resolve(self.esl_host)
        if peer or not self.peer:
            self.peer = peer
        if self.read_host:
            try:
                self.own = host_addresses()
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                log.warning("cannot read the host's own addresses (kept the last): %s", exc)
        self._fixed = frozenset([*self.peer, *self.own])

    def reason(
        self, target: IPAddress | IPNetwork, clients: Iterable[IPAddress] = ()
    ) -> str | None:
        """Why no ban may cover `target`, or None."""
        why = never_ban_reason(target)
        if why is not None:
            return why
        single = isinstance(target, ipaddress.IPv4Address | ipaddress.IPv6Address)
        if single and not clients and target not in self._fixed:
            return None
        if covers(target, self.peer) is not None:
            return f"the ESL peer ({self.esl_host})"
        hit = covers(target, self.own)
        if hit is not None:
            return f"an address of this host ({hit})"
        hit = covers(target, clients)
        if hit is not None:
            return f"the address of the API client making the request ({hit})"
        return None
