"""Make the kernel sets match what the ledger wants, both ways, without ever flushing.

Backend-neutral: only `KernelBackend.list_members/apply/remove` are used, so the ipset
and nftables backends share it.

- `reconcile_members`: wanted elements missing from the kernel are added with their
  remaining timeout (after a reboot the sets are empty); members nobody wants are removed
  (or kept: `security.keep_foreign_entries`); members whose timeout disagrees are
  re-armed. Used at start, by the periodic drift check and by `fsguard reconcile`.
- `rearm`: the largest kernel timeout is MAX_TIMEOUT (~24.8 days); bans longer than that
  are re-applied periodically so the kernel entry never lapses before the ban ends.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from .backend import MAX_TIMEOUT, Element, FirewallError, KernelDiff

if TYPE_CHECKING:
    from .backend import KernelBackend

log = logging.getLogger("fsguard.firewall")

RETIME_TOLERANCE = 5  # seconds of disagreement between kernel and store tolerated
APPLY_CHUNK = 20_000  # elements per kernel transaction


class _Ban(Protocol):
    ip: str
    expires_at: float


def kernel_timeout(expires_at: float, now: float) -> int:
    """The kernel timeout of a ban ending at `expires_at` (0 = permanent)."""
    if expires_at == 0:
        return 0
    return max(1, min(MAX_TIMEOUT, math.ceil(expires_at - now)))


def parse_member(text: str) -> Element | ipaddress.IPv4Network | None:
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            if net.prefixlen == net.max_prefixlen:
                return net.network_address
            return net
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _apply_chunked(
    kernel: KernelBackend, bans: list[tuple[Element, int]], unbans: list[Element]
) -> list[str]:
    errors: list[str] = []
    for i in range(0, len(bans), APPLY_CHUNK):
        try:
            kernel.apply(bans[i : i + APPLY_CHUNK])
        except FirewallError as exc:
            errors.append(str(exc))
    for i in range(0, len(unbans), APPLY_CHUNK):
        try:
            kernel.remove(unbans[i : i + APPLY_CHUNK])
        except FirewallError as exc:
            errors.append(str(exc))
    return errors


def reconcile_members(
    kernel: KernelBackend, want: Mapping[str, tuple[Element, int]], *, keep_foreign: bool
) -> KernelDiff:
    """KernelBackend.reconcile over list_members/apply/remove. Never flushes."""
    diff = KernelDiff()
    members: dict[str, int] = {}
    odd: list[str] = []
    for text, remaining in kernel.list_members():
        elem = parse_member(text)
        if elem is None or isinstance(elem, ipaddress.IPv4Network):
            odd.append(text)
            continue
        members[str(elem)] = remaining
    diff.kernel_before = len(members) + len(odd)
    adds: list[tuple[Element, int]] = []
    for key, (elem, timeout) in want.items():
        have = members.get(key)
        if have is None:
            adds.append((elem, timeout))
            diff.added += 1
        elif (have == 0) != (timeout == 0) or abs(have - timeout) > RETIME_TOLERANCE:
            adds.append((elem, timeout))
            diff.retimed += 1
    removes: list[Element] = []
    foreign = [k for k in members if k not in want]
    if keep_foreign:
        diff.kept_foreign = len(foreign) + len(odd)
        diff.foreign = [(k, members[k]) for k in foreign]
    else:
        for key in foreign:
            parsed = parse_member(key)
            if parsed is not None and not isinstance(parsed, ipaddress.IPv4Network):
                removes.append(parsed)
        diff.removed_foreign = len(removes)
        if odd:
            diff.errors.append(f"{len(odd)} kernel entries not understood: {odd[:3]}")
        if removes:
            shown = ", ".join(str(e) for e in removes[:5])
            more = f" and {len(removes) - 5} more" if len(removes) > 5 else ""
            log.warning(
                "reconcile: removing %d kernel entries with no record: %s%s",
                len(removes), shown, more,
            )  # fmt: skip
    diff.errors.extend(_apply_chunked(kernel, adds, removes))
    return diff


def rearm(kernel: KernelBackend, bans: Iterable[_Ban], now: float) -> int:
    """Re-apply bans that outlive the largest kernel timeout; returns how many."""
    items: list[tuple[Element, int]] = []
    for entry in bans:
        if entry.expires_at == 0 or entry.expires_at - now <= MAX_TIMEOUT:
            continue
        elem = parse_member(entry.ip)
        if elem is None or isinstance(elem, ipaddress.IPv4Network):
            continue
        try:
            items.append((kernel.element(elem), MAX_TIMEOUT))
        except ValueError:
            continue
    errors = _apply_chunked(kernel, items, [])
    for err in errors:
        log.error("re-arming long bans failed: %s", err)
    return len(items)
