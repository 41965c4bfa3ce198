"""The pull side of the CrowdSec fleet in the firewall: remote bans in and out.

Remote bans go through the ban ledger like any other (kernel first, then store; a ban the
kernel refuses is retried by the ledger); they carry source "upstream". One audit record
and one log line per stream answer, not one per address (a startup answer has 100k+).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
from typing import TYPE_CHECKING

import msgspec

from shared.messages import BanDecision, ListChange

from .backend import Element
from .entries import BanEntry
from .ledger import Intent, kernel_timeout_for

if TYPE_CHECKING:
    from .firewall import Firewall

log = logging.getLogger("fsguard.firewall")

REMOTE_SOURCE = "upstream"  # the store's source for a ban the LAPI gave us
REMOTE_RULE = "crowdsec"


class RemoteRow(msgspec.Struct, array_like=True):
    id: int
    key: str
    origin: str
    scenario: str
    expires: float


def ban_remote(
    fw: Firewall, rows: dict[int, RemoteRow], elems: dict[str, Element], now: float
) -> int:
    """Through the ledger (kernel, then store) for keys whose remote expiry is later
    than what they have; returns how many the kernel holds now (a refused one is
    retried by the ledger like any ban)."""
    best: dict[str, RemoteRow] = {}
    for r in rows.values():
        cur = best.get(r.key)
        if cur is None or r.expires > cur.expires:
            best[r.key] = r
    intents: list[Intent] = []
    for key, r in best.items():
        existing = fw.ledger.get(key, now)
        if existing is not None and (existing.permanent or existing.expires_at >= r.expires):
            continue  # idempotent: the later expiry stays
        expires = float(math.ceil(r.expires))
        reason = f"crowdsec {r.origin}: {r.scenario}"
        if existing is not None:  # a local ban lives longer; it stays local
            # (no decision id: the store would skip an id it already processed)
            entry = msgspec.structs.replace(existing, expires_at=expires, decision_id="")
        else:
            entry = BanEntry(ip=key, added_at=now, expires_at=expires, reason=reason,
                             rule=REMOTE_RULE, source=REMOTE_SOURCE)  # fmt: skip
        timeout = kernel_timeout_for(max(1.0, expires - now))
        # A decision stands for the LAPI's in the ledger, log and audit (no worker: no ack).
        d = BanDecision(id="", ip=key, rule=REMOTE_RULE, reason=reason,
                        duration=expires - now, source=REMOTE_SOURCE)  # fmt: skip
        intents.append(Intent(elems[key], timeout, entry, [d]))
    if not intents:
        return 0
    # The ledger (kernel, then store); a ban the kernel refuses waits in its pending
    # set and is announced by Firewall.retry_pending when it lands. One audit record
    # and one log line per stream answer, not one per address (startup: 100k+).
    done = fw.ledger.apply(intents)
    for intent in done:
        fw.publish(ListChange(list="blacklist", op="add", ip=intent.key,
                              expires=intent.entry.expires_at))  # fmt: skip
    fw.stats.bans_applied += len(done)
    if done:
        keys = [i.key for i in done]
        fw.audit.record("crowdsec_apply", actor="crowdsec", target=f"{len(done)} bans",
                        outcome="ok", details={"keys": keys[:20]})  # fmt: skip
        log.info("banned %d addresses from crowdsec: %s%s", len(done), ", ".join(keys[:5]),
                 " ..." if len(keys) > 5 else "")  # fmt: skip
    return len(done)

def lift_remote(fw: Firewall, keys: list[str], now: float) -> int:
    """Remove the bans that exist only because of (now deleted) LAPI decisions."""
    held = {key: fw.ledger.get(key, now) for key in keys}
    lift = [k for k, e in held.items() if e is not None and e.source == REMOTE_SOURCE]
    if not lift:
        return 0
    fw.ledger.unban_many([fw.parse_target(key) for key in lift])
    for key in lift:
        fw.publish(ListChange(list="blacklist", op="remove", ip=key))
    fw.audit.record("crowdsec_lift", actor="crowdsec", target=f"{len(lift)} bans",
                    outcome="ok", details={"keys": lift[:20]})  # fmt: skip
    log.info("lifted %d crowdsec bans (deleted on the LAPI)", len(lift))
    return len(lift)


def element(fw: Firewall, text: str) -> Element:
    """fw.parse_target, with a C fast path for dotted-quad IPv4 (the bulk of a stream)."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return fw.parse_target(text)
    return fw.kernel.element(ipaddress.IPv4Address(packed))
