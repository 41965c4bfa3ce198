"""Whitelisted networks in the firewall (POST /security/whitelist {"ip": "198.51.100.0/24"}).

A network entry lives in the same whitelist (and SQLite table) as an address entry, keyed
by its canonical text. Nothing inside an active one is banned: the firewall refuses rule
decisions, manual bans and reconcile re-adds inside it (`covering`), and the workers skip
its sources (fsguard_workers/netlist.py). Whitelisting a network lists the active bans
inside it; `lift_bans` lifts them (kernel, store, workers).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from shared.control import ControlError
from shared.logs import escape
from shared.messages import ListChange
from shared.ops.firewall_bans import UnbanRequest
from shared.ops.firewall_lists import WhitelistAddRequest, WhitelistAddResult

from .store import normalize_key

if TYPE_CHECKING:
    from .lists import ListOps, WhitelistEntry

log = logging.getLogger("fsguard.firewall")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def whitelist_key(text: str) -> str:
    """Canonical address or network text of a whitelist argument, or ControlError 400."""
    try:
        key, _ = normalize_key(text.strip())
    except ValueError:
        raise ControlError(f"invalid IP address: {text}", 400) from None
    if key.endswith("/0"):
        raise ControlError(f"refusing to whitelist every address: {text}", 400)
    return key


def _net(text: str) -> Network:
    return ipaddress.ip_network(text, strict=False)


def covering(entries: Iterable[WhitelistEntry], key: str) -> WhitelistEntry | None:
    """The active network entry containing address or prefix `key`, if any."""
    target: Network | None = None
    for entry in entries:
        if "/" not in entry.ip:
            continue
        if target is None:
            try:
                target = _net(key)
            except ValueError:
                return None
        net = _net(entry.ip)
        if net.version == target.version and target.subnet_of(net):  # type: ignore[arg-type]
            return entry
    return None


def ttl_of(raw: float | None) -> float | None:
    """The optional `ttl` argument in seconds (> 0), or ControlError 400."""
    if raw is None:
        return None
    seconds = raw
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 100 * 365 * 86400:
        raise ControlError(f"invalid ttl: {raw!r}: expected 0 < ttl <= 100 years", 400)
    return seconds


def bans_inside(ops: ListOps, network: str, now: float) -> list[str]:
    net = _net(network)
    inside: list[str] = []
    for entry in ops.fw.store.active(now):
        try:
            target = _net(entry.ip)
        except ValueError:
            continue
        if target.version == net.version and target.subnet_of(net):  # type: ignore[arg-type]
            inside.append(entry.ip)
    return sorted(inside)


def add_network(ops: ListOps, network: str, req: WhitelistAddRequest) -> WhitelistAddResult:
    """whitelist_add for a network: store, broadcast, list (and lift) the bans inside."""
    from .lists import WhitelistEntry

    user = req.userId
    domain = req.domain or ops.config.freeswitch.default_domain
    permanent = req.permanent
    ttl = ttl_of(req.ttl)
    now = ops.clock()
    expires = 0.0 if permanent else now + (ttl or ops.config.security.whitelist_ttl)
    ops.whitelist.put(WhitelistEntry(ip=network, added_at=now, expires_at=expires,
                                     user_id=user, domain=domain, last_seen=now))  # fmt: skip
    ops.fw.publish(ListChange(list="whitelist", op="add", ip=network, expires=expires))
    inside = bans_inside(ops, network, now)
    lifted: list[str] = []
    if req.lift_bans:
        for key in inside:
            try:
                ops.fw.control.op_unban(UnbanRequest(ip=key))
            except ControlError as exc:
                if exc.status != 404:
                    raise
            lifted.append(key)
    log.info("whitelisted network=%s user=%s domain=%s permanent=%s bans_inside=%d lifted=%d",
             network, escape(user), escape(domain), permanent, len(inside), len(lifted))
    kept = [k for k in inside if k not in lifted]
    message = f"network {network} added to whitelist for {user}@{domain}"
    if kept:
        message += f"; {len(kept)} active ban(s) inside kept (lift_bans lifts them)"
    if lifted:
        message += f"; {len(lifted)} ban(s) inside lifted"
    return WhitelistAddResult(
        status="success",
        message=message,
        unbanned=", ".join(lifted),
        bansInside=kept,
        liftedBans=lifted,
    )
