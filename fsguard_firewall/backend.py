"""The kernel backend interface: what the firewall's ban ledger needs from a packet filter.

Two implementations plug in here: `kernel.KernelFirewall` (ipset + iptables/ip6tables,
the Go program's layout) and an nftables one (one `inet` table, two named sets). Nothing
outside fsguard_firewall knows which one runs. Every method may raise `FirewallError`;
none flushes or recreates an existing set.

Elements are `ipaddress` objects: a backend renders them itself and never sees the
caller's text. A timeout is in seconds, 0 = permanent, at most MAX_TIMEOUT (callers
clamp; longer bans are re-armed by the ledger).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Required, TypedDict, Unpack

import msgspec

Target = (
    ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network
)
Element = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv6Network

MAX_TIMEOUT = 2147483  # ipset's largest timeout, seconds (0 = permanent); nft uses the same


def clamp_timeout(seconds: int) -> int:
    """A ban timeout the sets accept: 0 stays permanent, the rest is 1..MAX_TIMEOUT."""
    if seconds < 0:
        raise ValueError(f"negative timeout {seconds}")
    return min(seconds, MAX_TIMEOUT)


class BackendOptions(TypedDict, total=False):
    """The keyword options every backend takes (make_backend builds them once)."""

    default_timeout: Required[int]  # the sets' default, seconds (clamped; 0 = permanent)
    dry_run: bool  # log instead of touching the kernel
    ipv6_prefix: int  # IPv6 bans cover this prefix (1..128)
    command_timeout: float  # seconds one tool run may take
    command_prefix: Sequence[str]  # e.g. ("ip", "netns", "exec", NS)


class BackendBase:
    """The options both backends share, validated in one place."""

    def __init__(self, **options: Unpack[BackendOptions]) -> None:
        ipv6_prefix = options.get("ipv6_prefix", 128)
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be 1..128, got {ipv6_prefix}")
        self.default_timeout = clamp_timeout(int(options["default_timeout"]))
        self.dry_run = options.get("dry_run", False)
        self.ipv6_prefix = ipv6_prefix
        self.command_timeout = options.get("command_timeout", 5.0)
        self.command_prefix = list(options.get("command_prefix", ()))


class FirewallError(Exception):
    """A kernel command failed, timed out, or its binary is missing.

    After a failed `apply`, `failed` lists (element, error) for every element that
    did not reach the kernel and `applied` counts the ones that did. `full` is true
    when the kernel refused because a set is full (maxelem reached).
    """

    def __init__(
        self,
        message: str,
        *,
        failed: Sequence[tuple[str, str]] = (),
        applied: int = 0,
        full: bool = False,
    ) -> None:
        super().__init__(message)
        self.failed = list(failed)
        self.applied = applied
        self.full = full


class KernelDiff(msgspec.Struct, kw_only=True):
    """What `KernelBackend.reconcile` found and did."""

    kernel_before: int = 0  # members found in the kernel sets
    added: int = 0  # wanted, missing: added
    retimed: int = 0  # present with a wrong timeout: re-armed
    removed_foreign: int = 0  # present, not wanted: removed
    kept_foreign: int = 0  # ... or kept (keep_foreign)
    foreign: list[tuple[str, int]] = msgspec.field(default_factory=list)  # kept: (elem, timeout)
    errors: list[str] = msgspec.field(default_factory=list)


class KernelBackend(Protocol):
    """A kernel packet filter holding fsguard's bans (one set per address family)."""

    kind: str  # "ipset" | "nftables"
    dry_run: bool  # log instead of touching the kernel (members kept in memory)

    def element(self, target: Target) -> Element:
        """The element a target becomes (IPv4-mapped unmapped, IPv6 aggregated to the
        configured ban prefix). ValueError for a target the sets cannot hold."""
        ...

    def ensure(self) -> list[str]:
        """Create the sets and DROP rules when missing; migrate sets whose parameters
        changed, keeping their members. Returns the names migrated. Never flushes."""
        ...

    def apply(self, bans: Sequence[tuple[Target, int]]) -> int:
        """Add or re-time elements (timeout seconds, 0 = permanent) in one transaction
        where the backend can. Returns how many reached the kernel; FirewallError with
        `.failed` naming exactly the elements that did not (and `.full` for a full set)."""
        ...

    def remove(self, targets: Sequence[Target]) -> int:
        """Delete elements (absent ones are not an error)."""
        ...

    def list_members(self) -> list[tuple[str, int]]:
        """Every member of both sets: (element text, remaining seconds; 0 = permanent)."""
        ...

    def contains(self, target: Target) -> bool:
        """Whether a set holds (or covers) this address."""
        ...

    def reconcile(
        self, want: Mapping[str, tuple[Element, int]], *, keep_foreign: bool
    ) -> KernelDiff:
        """Make the sets hold exactly `want` (str(element) -> (element, timeout)):
        add the missing, re-time the wrong, remove (or keep) members not wanted."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the operator sees: {"chain": ..., "ipset": <IPv4 set name>, "kind": ...}."""
        ...
