"""The state store's records (bans, whitelist entries, outbox items), its errors, and
ban key normalisation.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.iputil import parse_ip

BAN_SOURCES = ("rule", "manual", "upstream")
WHITELIST_SOURCES = ("learned", "manual")
PATTERN_SOURCES = ("config", "runtime")
EXPORT_FORMAT = "fsguard-state"
EXPORT_VERSION = 1
DB_FILENAME = "fsguard.db"
MAX_TEXT = 1024  # imported strings longer than this are refused
IN_CHUNK = 500  # parameters per `IN (…)` query, well under SQLite's limit
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class StoreError(Exception):
    """The state file cannot be used; the message says which file and why."""


class ImportDataError(StoreError, ValueError):
    """Import data refused; nothing was written. The message names the bad entry."""


class Refused(Exception):
    def __init__(self, keys: set[str]) -> None:
        super().__init__(f"{len(keys)} keys refused")
        self.keys = keys


class Expiring:
    """`permanent` and `active` of a record whose `expires` is None when permanent (a
    mixin: the record's fields, and their order, stay its own)."""

    __slots__ = ()
    expires: float | None

    @property
    def permanent(self) -> bool:
        return self.expires is None

    def active(self, now: float) -> bool:
        return self.expires is None or self.expires > now


class BanRecord(msgspec.Struct, Expiring, kw_only=True):
    """One ban. `key` is a normalized address or an IPv6 prefix; expires None = permanent."""

    key: str
    rule: str
    reason: str
    created: float
    expires: float | None
    source: str = "rule"
    decision_id: str = ""
    user: str = ""
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)
    family: int = 0  # 4 or 6; filled in from `key` by add_bans


class WhitelistRecord(msgspec.Struct, Expiring, kw_only=True):
    ip: str
    added: float
    expires: float | None  # None = permanent
    user_id: str = ""
    domain: str = ""
    last_seen: float = 0.0
    source: str = "learned"


class OutboxItem(msgspec.Struct, kw_only=True):
    id: int
    ban_key: str
    payload: str  # JSON text, sent as is
    attempts: int
    next_attempt: float
    created: float
    last_error: str


def rfc3339(ts: float) -> str:
    """Go's time.Time JSON text in UTC ("2024-05-01T10:00:00Z", fraction when there is
    one): the API's ban entries and the state export."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def default_path(state_dir: str) -> str:
    """The state file inside `config.paths.state_dir`."""
    return os.path.join(state_dir, DB_FILENAME)


def normalize_key(text: str) -> tuple[str, int]:
    """(canonical key, family) of an address or prefix. Raises ValueError.

    IPv4-mapped IPv6 is unmapped; a full-length prefix (/32, /128) becomes the address.
    """
    if not isinstance(text, str) or not text or len(text) > 49 or CONTROL_CHARS.search(text):
        raise ValueError(f"invalid IP address or prefix: {text!r}")
    if "/" not in text:
        try:
            addr = parse_ip(text)
        except ValueError:
            raise ValueError(f"invalid IP address: {text!r}") from None
        return str(addr), addr.version
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"invalid IP address or prefix: {text!r}") from exc
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address), net.version
    return str(net), net.version


def fast_key(text: str) -> tuple[str, int]:
    """normalize_key, with a C fast path for canonical IPv4 (the bulk of add_bans)."""
    try:
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text, 4
    except (OSError, TypeError, ValueError):
        pass
    return normalize_key(text)
