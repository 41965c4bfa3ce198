"""FreeSWITCH's configured gateways are protected sources (issue 12): the supervisor
asks `api sofia xmlstatus gateway` when the ESL connection comes up and every
`security.gateway_refresh_interval`, resolves each gateway's proxy host, and hands
the addresses to every worker (control op "gateways").

The reply is mod_sofia's cmd_xml_status (mod_sofia.c, xml_gateway_status): an XML
document `<gateways>` of `<gateway>` elements whose `<proxy>` is the register proxy
URI (`sip:host[:port][;params]`). `<to>` and `<proxy>` are not XML-escaped by
FreeSWITCH, so the elements are read with a pattern, not an XML parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

GATEWAY_COMMAND = "sofia xmlstatus gateway"
MAX_GATEWAYS = 1024
RESOLVE_TIMEOUT = 5.0
_PROXY = re.compile(r"<proxy>([^<]{0,512})</proxy>")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}")


def proxy_hosts(xml: str) -> list[str]:
    """Hosts of the gateways' proxy URIs, in order, without duplicates."""
    hosts: list[str] = []
    for raw in _PROXY.findall(xml)[:MAX_GATEWAYS]:
        host = _host_of(raw.strip())
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def _host_of(uri: str) -> str:
    uri = uri.replace("&amp;", "&")
    for scheme in ("sips:", "sip:"):
        if uri.lower().startswith(scheme):
            uri = uri[len(scheme) :]
            break
    uri = uri.split(";", 1)[0].split("?", 1)[0]
    if "@" in uri:
        uri = uri.rsplit("@", 1)[1]
    if uri.startswith("["):
        end = uri.find("]")
        candidate = uri[1:end] if end > 0 else ""
    elif uri.count(":") == 1:
        candidate = uri.split(":", 1)[0]
    else:
        candidate = uri
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    return candidate.lower().rstrip(".") if _HOST.fullmatch(candidate) else ""


async def resolve(hosts: Sequence[str], timeout: float = RESOLVE_TIMEOUT) -> list[str]:
    """IP literals as they are, names through getaddrinfo (a failure skips that name)."""
    loop = asyncio.get_running_loop()
    out: list[str] = []
    for host in hosts:
        try:
            out.append(str(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM), timeout
            )
        except (OSError, TimeoutError) as exc:
            log.warning("gateway host %s does not resolve: %s", host, exc)
            continue
        for info in infos:
            addr = str(info[4][0])
            if addr not in out:
                out.append(addr)
    return out


class GatewayWatch:
    """Keeps the workers' gateway list current. `trigger()` asks for a refresh now
    (ESL connected, a worker restarted)."""

    def __init__(
        self,
        query: Callable[[str], Awaitable[str]],
        push: Callable[[list[str]], Awaitable[None]],
        connected: Callable[[], bool],
        interval: float,
    ) -> None:
        self._query = query
        self._push = push
        self._connected = connected
        self.interval = interval
        self._wake = asyncio.Event()
        self.addresses: list[str] = []
        self.queries = 0
        self.failures = 0

    def trigger(self) -> None:
        self._wake.set()

    async def refresh(self) -> bool:
        """Ask FreeSWITCH, resolve, push. False (and the last list kept) on failure."""
        self.queries += 1
        try:
            reply = await self._query(GATEWAY_COMMAND)
        except Exception as exc:  # not connected, -ERR, timeout: try again later
            self.failures += 1
            log.warning("gateway query failed: %s", exc)
            return False
        addresses = await resolve(proxy_hosts(reply))
        if addresses != self.addresses:
            log.info("FreeSWITCH gateways (protected sources): %s", ", ".join(addresses) or "none")
        self.addresses = addresses
        await self._push(addresses)
        return True

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            if self._connected():
                await self.refresh()
