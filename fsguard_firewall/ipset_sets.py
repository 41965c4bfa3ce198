"""ipset specifics of the kernel backend: set parameters, migration, `ipset save` parsing.

A set that exists with other parameters (type, family, no timeout support — e.g. hash:ip
vs hash:net after `ipv6_ban_prefix` changed) is migrated: a new set is created and filled,
swapped in with `ipset swap`, and the old one destroyed. When the kernel refuses the swap
(different type or family), the DROP rule is moved to the new set first, so some rule
protects the host at every moment.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import TYPE_CHECKING

import msgspec

from .backend import MAX_TIMEOUT, Element, FirewallError

if TYPE_CHECKING:
    from .kernel import KernelFirewall

log = logging.getLogger("fsguard.firewall")


class SetParams(msgspec.Struct, frozen=True):
    kind: str  # hash:ip | hash:net
    family: str  # inet | inet6
    timeout: bool


def parse_save(text: str, set_name: str) -> list[tuple[str, int]]:
    """(element, remaining timeout; 0 = permanent) from `ipset list -output save`."""
    out: list[tuple[str, int]] = []
    for raw in text.splitlines():
        parts = raw.split()
        if len(parts) < 3 or parts[0] != "add" or parts[1] != set_name:
            continue
        timeout = 0
        if "timeout" in parts[3:]:
            idx = parts.index("timeout", 3)
            if idx + 1 < len(parts) and parts[idx + 1].isdigit():
                timeout = int(parts[idx + 1])
        out.append((parts[2], timeout))
    return out


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
    for member, timeout in parse_save(proc.stdout, name):
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




# --- reading the ruleset (status, GET /security/iptables) --------------------------------


def ruleset(kernel: KernelFirewall) -> dict[str, object]:
    """fsguard's DROP rules and set parameters as the kernel has them."""
    rules: list[str] = []
    for binary, name in (("iptables", kernel.set_v4), ("ip6tables", kernel.set_v6)):
        proc = kernel._run([binary, "-w", "5", "-S", kernel.chain], check=False)
        rules += [
            f"{binary} {line}"
            for line in proc.stdout.splitlines()
            if f"--match-set {name} " in line
        ]
    sets = {name: set_params(kernel, name) for name in (kernel.set_v4, kernel.set_v6)}
    return {
        "chain": kernel.chain,
        "rules": rules,
        "sets": {n: msgspec.to_builtins(p) if p else None for n, p in sets.items()},
    }
