"""Network entries of the whitelist in the API (fsguard addition to the Go API).

POST /security/whitelist takes a network in its usual `ip` field ("198.51.100.0/24",
"2001:db8:5::/48"), with `ttl` (a duration) or `permanent`, and `lift_bans`. The answer
for a network adds `bansInside` (active bans inside it, kept) and `liftedBans`.
A network's own entry is read and removed at /security/whitelist/{address}/{prefix}
(the "/" of the network splits the path).
"""

from __future__ import annotations

import ipaddress

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from fsguard_api import access
from fsguard_api.models import MsgspecResponse, StatusMessage, WhitelistLookup
from fsguard_api.openapi import doc
from fsguard_api.peers import PeerError, Peers
from shared.iputil import parse_ip
from shared.ops import firewall as fw_ops
from shared.ops.firewall_bans import IpRequest
from shared.ops.firewall_lists import WhitelistRemoveRequest


class WhitelistAdded(msgspec.Struct, kw_only=True, omit_defaults=True):
    """POST /security/whitelist: Go's {status, message}; for a network also the bans."""

    status: str
    message: str
    bansInside: list[str] | msgspec.UnsetType = msgspec.UNSET
    liftedBans: list[str] | msgspec.UnsetType = msgspec.UNSET


def checked_target(text: str) -> str:
    """Canonical address or network (IPv4-mapped unmapped, /32 and /128 as the address),
    or a 400."""
    value = text.strip()
    try:
        if "/" not in value:
            return str(parse_ip(value))
        if len(value) > 49 or "%" in value:
            raise ValueError(value)
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise PeerError(f"invalid IP address: {text}", 400) from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def add_routes(app: FastAPI, peers: Peers) -> None:
    @app.get("/security/whitelist/{address}/{prefix}", responses=doc(WhitelistLookup, 400))
    async def whitelist_network_get(address: str, prefix: str) -> Response:
        network = checked_target(f"{address}/{prefix}")
        found = await peers.ask(fw_ops.WHITELIST_GET, IpRequest(ip=network))
        result = WhitelistLookup(ip=network, whitelisted=found.whitelisted)
        if found.whitelisted:
            result.userId, result.domain = found.userId, found.domain
        return MsgspecResponse(result)

    @app.delete("/security/whitelist/{address}/{prefix}",
                responses=doc(StatusMessage, 400, 404))  # fmt: skip
    async def whitelist_network_delete(request: Request, address: str, prefix: str) -> Response:
        network = checked_target(f"{address}/{prefix}")
        result = await peers.ask(fw_ops.WHITELIST_REMOVE, WhitelistRemoveRequest(ip=network))
        access.audit(request.scope, "whitelist_remove", network, "ok")
        return MsgspecResponse(result)
