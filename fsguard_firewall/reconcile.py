"""Make the kernel sets match the durable store, both ways, without ever flushing.

- `ensure_set_params`: a set that exists with other parameters (type, family, no timeout
  support — e.g. hash:ip vs hash:net after `ipv6_ban_prefix` changed) is migrated: a new
  set is created and filled, swapped in with `ipset swap`, and the old one destroyed.
  When the kernel refuses the swap (different type or family), the DROP rule is moved to
  the new set first, so some rule protects the host at every moment.
- `reconcile`: bans in the store but not in the kernel are re-added with their remaining
  timeout (after a reboot the sets are empty); kernel entries without a record are
  removed (or kept: `security.keep_foreign_entries`); entries whose timeout disagrees with
  the store are re-armed. Rows for addresses that are now trusted or whitelisted are
  dropped (the firewall refuses to ban those, whatever the path).
- `rearm`: ipset's largest timeout is MAX_TIMEOUT (~24.8 days); bans longer than that are
  re-applied periodically so the kernel entry never lapses before the ban ends.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from .kernel import MAX_TIMEOUT, Element, FirewallError, KernelFirewall, _parse_save

log = logging.getLogger("fsguard.firewall")

RETIME_TOLERANCE = 5  # seconds of disagreement between kernel and store tolerated
APPLY_CHUNK = 20_000  # lines per `ipset restore`


class _Ban(Protocol):
    ip: str
    expires_at: float

    def active(self, now: float) -> bool: ...


class _Bans(Protocol):
    def active(self, now: float) -> Any: ...
    def remove(self, ip: str) -> Any: ...


class SetParams(msgspec.Struct, frozen=True):
    kind: str  # hash:ip | hash:net
    family: str  # inet | inet6
    timeout: bool


class ReconcileResult(msgspec.Struct, kw_only=True):
    stored: int = 0  # active bans in the store
    kernel_before: int = 0  # members found in the kernel sets
    added: int = 0  # re-added from the store
    retimed: int = 0  # present with a wrong timeout: re-armed
    removed_foreign: int = 0  # kernel entries without a record, removed
    kept_foreign: int = 0  # ... or kept (keep_foreign_entries)
    dropped_rows: int = 0  # rows for trusted/whitelisted/invalid targets, deleted
    migrated: list[str] = msgspec.field(default_factory=list)  # sets migrated
    errors: list[str] = msgspec.field(default_factory=list)
    seconds: float = 0.0

    def changed(self) -> bool:
        return bool(
            self.added or self.retimed or self.removed_foreign or self.dropped_rows
            or self.migrated
        )  # fmt: skip

    def summary(self) -> str:
        return (
            f"stored={self.stored} kernel={self.kernel_before} added={self.added} "
            f"retimed={self.retimed} removed_foreign={self.removed_foreign} "
            f"kept_foreign={self.kept_foreign} dropped_rows={self.dropped_rows} "
            f"migrated={','.join(self.migrated) or '-'} errors={len(self.errors)} "
            f"in {self.seconds:.2f}s"
        )


# --- set parameters and migration --------------------------------------------------------


def wanted_params(kernel: KernelFirewall) -> dict[str, SetParams]:
    v6 = "hash:ip" if kernel.ipv6_prefix == 128 else "hash:net"
    return {
        kernel.set_v4: SetParams("hash:ip", "inet", True),
        kernel.set_v6: SetParams(v6, "inet6", True),
    }


def set_params(kernel: KernelFirewall, name: str) -> SetParams | None:
    """The parameters of an existing set, or None when it does not exist."""
    proc = kernel._run(["ipset", "list", "-terse", name], check=False)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            return None
        raise FirewallError(f"ipset list {name} failed: {proc.stderr.strip()}")
    kind, header = "", ""
    for line in proc.stdout.splitlines():
        if line.startswith("Type:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("Header:"):
            header = line.split(":", 1)[1]
    words = header.split()
    family = words[words.index("family") + 1] if "family" in words[:-1] else ""
    return SetParams(kind, family, "timeout" in words)


def _create(kernel: KernelFirewall, name: str, params: SetParams) -> None:
    kernel._run([
        "ipset", "create", name, params.kind, "family", params.family,
        "timeout", str(kernel.default_timeout), "maxelem", "1000000",
    ])  # fmt: skip


def _rule(kernel: KernelFirewall, name: str) -> list[str]:
    return [kernel.chain, "-m", "set", "--match-set", name, "src", "-j", "DROP"]


def _binary(family: str) -> str:
    return "ip6tables" if family == "inet6" else "iptables"


def _move_rule(kernel: KernelFirewall, old: str, old_family: str, new: str, family: str) -> None:
    """Insert the DROP rule for `new` at position 1, then delete every rule for `old`."""
    kernel._run([_binary(family), "-w", "5", "-I", kernel.chain, "1", *_rule(kernel, new)[1:]])
    for _ in range(16):
        proc = kernel._run([_binary(old_family), "-w", "5", "-D", *_rule(kernel, old)], check=False)
        if proc.returncode != 0:
            break


def _converted_members(
    kernel: KernelFirewall, name: str, params: SetParams
) -> list[tuple[Element, int]]:
    """The members of `name`, as elements of the wanted set (others are dropped, logged)."""
    proc = kernel._run(["ipset", "list", "-output", "save", name])
    out: list[tuple[Element, int]] = []
    for member, timeout in _parse_save(proc.stdout, name):
        try:
            target = (
                ipaddress.ip_network(member, strict=False)
                if "/" in member
                else ipaddress.ip_address(member)
            )
            elem = kernel.element(target)
        except ValueError:
            log.warning("set migration: %s cannot be kept in the new %s set", member, name)
            continue
        want_v6 = params.family == "inet6"
        if (elem.version == 6) != want_v6:
            continue
        out.append((elem, timeout))
    return out


def migrate_set(kernel: KernelFirewall, name: str, params: SetParams, old: SetParams) -> None:
    """Replace set `name` (parameters `old`) by one with `params`, keeping its members."""
    tmp = f"fsgmig{os.getpid() % 1_000_000}{'6' if params.family == 'inet6' else '4'}"
    if set_params(kernel, tmp) is not None:
        kernel._run(["ipset", "destroy", tmp], check=False)
    _create(kernel, tmp, params)
    members = _converted_members(kernel, name, params)
    lines = [f"add {tmp} {elem} timeout {min(MAX_TIMEOUT, t)}" for elem, t in members]
    if lines:
        kernel._run(["ipset", "restore", "-exist"], stdin="\n".join(lines) + "\n")
    swap = kernel._run(["ipset", "swap", tmp, name], check=False)
    if swap.returncode == 0:
        # The rule follows the set index: it now matches the new set; tmp is the old one.
        kernel._run(["ipset", "destroy", tmp])
    else:
        # The kernel swaps only sets of the same type and family: move the rule instead.
        _move_rule(kernel, name, old.family, tmp, params.family)
        kernel._run(["ipset", "destroy", name])
        _create(kernel, name, params)
        kernel._run(["ipset", "swap", tmp, name])  # same type now; contents move to `name`
        _move_rule(kernel, tmp, params.family, name, params.family)
        kernel._run(["ipset", "destroy", tmp])
    log.warning(
        "migrated ipset %s from %s %s%s to %s %s timeout (%d members kept)",
        name, old.kind, old.family, " timeout" if old.timeout else " (no timeout)",
        params.kind, params.family, len(members),
    )  # fmt: skip


def ensure_set_params(kernel: KernelFirewall) -> list[str]:
    """Migrate every existing set whose parameters differ; returns the migrated names."""
    if kernel.dry_run:
        return []
    migrated: list[str] = []
    for name, params in wanted_params(kernel).items():
        current = set_params(kernel, name)
        if current is None or current == params:
            continue
        migrate_set(kernel, name, params, current)
        migrated.append(name)
    return migrated


# --- reconcile ----------------------------------------------------------------------------


def kernel_timeout(expires_at: float, now: float) -> int:
    """The ipset timeout of a ban ending at `expires_at` (0 = permanent)."""
    if expires_at == 0:
        return 0
    return max(1, min(MAX_TIMEOUT, math.ceil(expires_at - now)))


def _parse_member(text: str) -> Element | ipaddress.IPv4Network | None:
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
    kernel: KernelFirewall, bans: list[tuple[Element, int]], unbans: list[Element]
) -> list[str]:
    errors: list[str] = []
    for i in range(0, len(bans), APPLY_CHUNK):
        try:
            kernel.apply(bans[i : i + APPLY_CHUNK])
        except FirewallError as exc:
            errors.append(str(exc))
    for i in range(0, len(unbans), APPLY_CHUNK):
        try:
            kernel.apply([], unbans=unbans[i : i + APPLY_CHUNK])
        except FirewallError as exc:
            errors.append(str(exc))
    return errors


def reconcile(
    kernel: KernelFirewall,
    bans: _Bans,
    *,
    keep_foreign: bool,
    refuse: Callable[[Element], bool],
    now: float | None = None,
) -> ReconcileResult:
    """Repair kernel ⇄ store differences (see the module doc). Never flushes."""
    started = time.monotonic()
    now = time.time() if now is None else now
    result = ReconcileResult()
    members: dict[str, int] = {}
    odd: list[str] = []
    for text, remaining in kernel.list_members():
        elem = _parse_member(text)
        if elem is None or isinstance(elem, ipaddress.IPv4Network):
            odd.append(text)
            continue
        members[str(elem)] = remaining
    result.kernel_before = len(members) + len(odd)
    want: dict[str, tuple[Element, int]] = {}
    drop: list[str] = []
    active: Iterable[_Ban] = bans.active(now)
    for entry in active:
        result.stored += 1
        elem_or = _parse_member(entry.ip)
        try:
            if elem_or is None:
                raise ValueError(entry.ip)
            elem = kernel.element(elem_or)
        except ValueError:
            drop.append(entry.ip)
            continue
        if refuse(elem):
            drop.append(entry.ip)
            continue
        timeout = kernel_timeout(entry.expires_at, now)
        key = str(elem)
        prev = want.get(key)
        if prev is None or (prev[1] != 0 and (timeout == 0 or timeout > prev[1])):
            want[key] = (elem, timeout)
    for ip in drop:
        bans.remove(ip)
        log.warning("reconcile: dropped stored ban %s (trusted, whitelisted or invalid)", ip)
    result.dropped_rows = len(drop)
    adds: list[tuple[Element, int]] = []
    for key, (elem, timeout) in want.items():
        have = members.get(key)
        if have is None:
            adds.append((elem, timeout))
            result.added += 1
        elif (have == 0) != (timeout == 0) or abs(have - timeout) > RETIME_TOLERANCE:
            adds.append((elem, timeout))
            result.retimed += 1
    removes: list[Element] = []
    foreign = [k for k in members if k not in want]
    if keep_foreign:
        result.kept_foreign = len(foreign) + len(odd)
    else:
        for key in foreign:
            parsed = _parse_member(key)
            if parsed is not None and not isinstance(parsed, ipaddress.IPv4Network):
                removes.append(parsed)
        result.removed_foreign = len(removes)
        if odd:
            result.errors.append(f"{len(odd)} kernel entries not understood: {odd[:3]}")
        if removes:
            shown = ", ".join(str(e) for e in removes[:5])
            more = f" and {len(removes) - 5} more" if len(removes) > 5 else ""
            log.warning(
                "reconcile: removing %d kernel entries with no record: %s%s",
                len(removes), shown, more,
            )  # fmt: skip
    result.errors.extend(_apply_chunked(kernel, adds, removes))
    result.seconds = time.monotonic() - started
    return result


def rearm(kernel: KernelFirewall, bans: Iterable[_Ban], now: float) -> int:
    """Re-apply bans that outlive ipset's largest timeout; returns how many."""
    items: list[tuple[Element, int]] = []
    for entry in bans:
        if entry.expires_at == 0 or entry.expires_at - now <= MAX_TIMEOUT:
            continue
        elem = _parse_member(entry.ip)
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
