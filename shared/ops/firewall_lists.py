"""Request and reply Structs of the firewall's list ops: the manual whitelist (addresses
and networks) and the untrusted patterns. Replies that are REST responses keep their Go
field and class names (the API's models.py imports them)."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from shared.ops.common import WhitelistEntry as WhitelistEntry  # the worker's too


class WhitelistLookup(msgspec.Struct, kw_only=True, omit_defaults=True):
    """GET /security/whitelist/{ip}. userId/domain only when whitelisted (as in Go);
    trustedNetwork (fsguard addition) names the trusted network that contains the IP."""

    ip: str
    whitelisted: bool
    userId: str | msgspec.UnsetType = msgspec.UNSET
    domain: str | msgspec.UnsetType = msgspec.UNSET
    trustedNetwork: str | msgspec.UnsetType = msgspec.UNSET


class UntrustedTest(msgspec.Struct, kw_only=True):
    domain: str
    isUntrusted: bool


class WhitelistAddRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An address or a network (its canonical text) to whitelist."""

    ip: str
    userId: str = ""
    domain: str = ""  # "": freeswitch.default_domain
    permanent: bool = False
    ttl: float | None = None  # seconds; None: security.whitelist_ttl
    lift_bans: bool = False  # a network: lift the active bans inside it
    actor: str = "control"


class WhitelistAddResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Reply of "whitelist_add": Go's {status, message}, the ban lifted for an address,
    and for a network the bans inside it (kept) and those lifted."""

    status: str
    message: str
    unbanned: str = ""
    bansInside: list[str] | UnsetType = UNSET
    liftedBans: list[str] | UnsetType = UNSET


class WhitelistRemoveRequest(msgspec.Struct, frozen=True, kw_only=True):
    ip: str
    # the API saw a worker's learned entry: no manual entry is a success too (UNSET: not
    # sent, and not recorded in the audit details)
    learned: bool | UnsetType = UNSET
    actor: str = "control"


class PatternAddRequest(msgspec.Struct, frozen=True, kw_only=True):
    pattern: str
    force: bool = False  # add a pattern that covers a trusted network anyway
    actor: str = "control"


class PatternRequest(msgspec.Struct, frozen=True, kw_only=True):
    pattern: str
    actor: str = "control"


class DomainRequest(msgspec.Struct, frozen=True, kw_only=True):
    domain: str
