"""Kernel firewall: one ipset per family behind one iptables DROP rule per family.

Only this module runs ipset/iptables. Every element written to ipset's input is
re-rendered from an `ipaddress` object (never the caller's text), commands run
without a shell and with a timeout, and a batch of bans is one `ipset restore`
process. Setup never flushes or recreates an existing set.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from . import backend as kb
from . import process_group as tool
from .backend import MAX_TIMEOUT, BackendOptions, Element, FirewallError, KernelDiff, Target
from .elements import to_element
from .ipset_netlink import IpsetNetlink, NetlinkPath
from .ipset_restore import IpsetLine, PendingApply
from .ipset_sets import ensure_set_params, parse_save
from .ipset_sets import ruleset as ipset_ruleset
from .reconcile import reconcile_members

__all__ = ["MAX_TIMEOUT", "Element", "FirewallError", "KernelFirewall", "Target"]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,28}$")
_INSTALL_HINT = "install it (apt-get install ipset iptables / dnf install ipset iptables)"


@dataclass
class _DryState:
    # element -> expiry wall time (0 = never)
    members: dict[str, float] = field(default_factory=dict)


class KernelFirewall(kb.BackendBase):
    """Single writer of the fsguard ipsets and their DROP rules (a backend.KernelBackend)."""

    kind = "ipset"

    def __init__(
        self,
        set_name: str,
        chain: str,
        *,
        netlink: Callable[[], IpsetNetlink] | None = None,
        **options: Unpack[BackendOptions],
    ) -> None:
        if not _NAME_RE.match(set_name):
            raise ValueError(f"invalid ipset name {set_name!r} (1-28 chars of A-Za-z0-9_.:-)")
        if not _NAME_RE.match(chain):
            raise ValueError(f"invalid iptables chain {chain!r} (1-28 chars of A-Za-z0-9_.:-)")
        super().__init__(**options)
        self.set_v4 = set_name
        self.set_v6 = set_name + "-v6"
        self.chain = chain
        # ipset add/del over netlink when ipset would run right here (no command prefix)
        # or through the given factory (a socket opened in the target namespace)
        self._netlink = NetlinkPath(netlink or (None if self.command_prefix else IpsetNetlink))
        self._dry = _DryState()

    # --- element rendering -------------------------------------------------------

    def element(self, target: Target) -> Element:
        """The kernel element a target becomes (elements.to_element; ValueError for an
        IPv4 network wider than one address or an IPv6 one wider than the ban prefix)."""
        return to_element(target, self.ipv6_prefix)

    def _set_for(self, element: Element) -> str:
        return self.set_v4 if element.version == 4 else self.set_v6

    # --- command execution -------------------------------------------------------

    def _run(
        self, argv: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        full = [*self.command_prefix, *argv]
        popen = tool.start(full, name=argv[0], hint=_INSTALL_HINT, stdin=stdin is not None)
        out, err = tool.finish(popen, self.command_timeout, " ".join(argv[:3]), stdin=stdin)
        proc = subprocess.CompletedProcess(full, popen.returncode, out, err)
        if self.command_prefix and proc.returncode != 0 and "No such file" in proc.stderr:
            # A wrapper (`ip netns exec`) reports a missing inner binary this way.
            raise FirewallError(f"{argv[0]} not found: {_INSTALL_HINT}: {proc.stderr.strip()}")
        if check and proc.returncode != 0:
            raise FirewallError(
                f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    # --- setup -------------------------------------------------------------------

    def ensure_setup(self) -> None:
        """Create the sets and the DROP rules if missing; never flush or recreate."""
        v6_type = "hash:ip" if self.ipv6_prefix == 128 else "hash:net"
        sets = [(self.set_v4, "hash:ip", "inet"), (self.set_v6, v6_type, "inet6")]
        for name, kind, family in sets:
            create = [
                "ipset", "create", name, kind, "family", family,
                "timeout", str(self.default_timeout), "maxelem", "1000000",
            ]  # fmt: skip
            if self.dry_run:
                log.info("DRY RUN: would run %s (if the set is missing)", " ".join(create))
                continue
            if self._set_exists(name):
                log.info("ipset %s exists, kept as is (never flushed)", name)
                continue
            self._run(create)
            log.info("created ipset %s (%s %s)", name, kind, family)
        for binary, name in (("iptables", self.set_v4), ("ip6tables", self.set_v6)):
            rule = [self.chain, "-m", "set", "--match-set", name, "src", "-j", "DROP"]
            if self.dry_run:
                log.info("DRY RUN: would ensure rule %s -I %s", binary, " ".join(rule))
                continue
            check = self._run([binary, "-w", "5", "-C", *rule], check=False)
            if check.returncode == 0:
                continue
            self._run([binary, "-w", "5", "-I", self.chain, "1", *rule[1:]])
            log.info("inserted %s rule: -I %s 1 match-set %s src DROP", binary, self.chain, name)

    def ensure(self) -> list[str]:
        """KernelBackend.ensure: migrate sets whose parameters changed, then setup."""
        migrated = [] if self.dry_run else ensure_set_params(self)
        self.ensure_setup()
        return migrated

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "chain": self.chain, "ipset": self.set_v4}
        info["ruleset"] = None if self.dry_run else ipset_ruleset(self)
        return info

    def remove(self, targets: Sequence[Target]) -> int:
        return self.apply([], unbans=targets)

    def reconcile(
        self, want: Mapping[str, tuple[Element, int]], *, keep_foreign: bool
    ) -> KernelDiff:
        if not self.dry_run:
            self.ensure_setup()  # sets or DROP rules removed by hand: back (drift check)
        return reconcile_members(self, want, keep_foreign=keep_foreign)

    def _set_exists(self, name: str) -> bool:
        proc = self._run(["ipset", "list", "-name", name], check=False)
        if proc.returncode == 0:
            return True
        if "does not exist" in proc.stderr:
            return False
        raise FirewallError(
            f"ipset list {name} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )

    # --- bans --------------------------------------------------------------------

    def apply(
        self,
        bans: Sequence[tuple[Target, int]],
        unbans: Sequence[Target] = (),
    ) -> int:
        """Add `bans` (target, timeout seconds; 0 = permanent) and delete `unbans`.

        One `ipset restore -exist` for the whole batch. Every element is validated
        before anything runs (ValueError, nothing executed). Returns the number of
        lines applied. If ipset rejects a line, the lines after it are retried and
        FirewallError lists exactly the elements that did not reach the kernel.
        """
        return self.apply_async(bans, unbans).wait()

    def apply_async(
        self,
        bans: Sequence[tuple[Target, int]],
        unbans: Sequence[Target] = (),
    ) -> PendingApply:
        """Like `apply`, but returns once `ipset restore` has its input, so the caller
        can commit its own records while the kernel works; `wait()` gives apply's result."""
        lines: list[IpsetLine] = []
        for target, timeout in bans:
            elem = self.element(target)
            name = self._set_for(elem)
            secs = kb.clamp_timeout(int(timeout))
            lines.append(IpsetLine(f"add {name} {elem} timeout {secs}", str(elem), name,
                               "add", elem, secs))
        for target in unbans:
            elem = self.element(target)
            name = self._set_for(elem)
            lines.append(IpsetLine(f"del {name} {elem}", str(elem), name, "del", elem, None))
        return self._start(lines)

    def _start(self, lines: list[IpsetLine]) -> PendingApply:
        if not lines:
            return PendingApply(self, [], None)
        if self.dry_run:
            self._dry_apply(lines)
            return PendingApply(self, lines, None, dry=True)
        applied = 0
        if self._netlink.available():  # restore only for what the kernel refused
            lines, applied = self._netlink.apply_lines(lines)
            if not lines:
                return PendingApply(self, [], None, applied=applied)
        return PendingApply(self, lines, self._popen(["ipset", "restore", "-exist"]),
                            applied=applied)

    def _popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start a command with piped stdio (its timeout is applied by the waiter)."""
        return tool.start(
            [*self.command_prefix, *argv], name=argv[0], hint=_INSTALL_HINT, stdin=True
        )

    def _dry_apply(self, lines: list[IpsetLine]) -> None:
        log.info("DRY RUN: would run ipset restore -exist with %d lines", len(lines))
        now = time.time()
        for line in lines:
            log.debug("DRY RUN: would %s", line.text)
            if line.text.startswith("add "):
                secs = int(line.text.rsplit(" ", 1)[1])
                self._dry.members[line.element] = now + secs if secs else 0.0
            else:
                self._dry.members.pop(line.element, None)

    # --- reads -------------------------------------------------------------------

    def list_members(self) -> list[tuple[str, int]]:
        """(element, remaining timeout seconds; 0 = permanent) for both sets."""
        if self.dry_run:
            now = time.time()
            out: list[tuple[str, int]] = []
            for elem, expires in list(self._dry.members.items()):
                if expires and expires <= now:
                    del self._dry.members[elem]
                    continue
                out.append((elem, max(1, int(expires - now)) if expires else 0))
            return out
        members: list[tuple[str, int]] = []
        for name in (self.set_v4, self.set_v6):
            proc = self._run(["ipset", "list", "-output", "save", name])
            members.extend(parse_save(proc.stdout, name))
        return members

    def contains(self, target: Target) -> bool:
        """Whether the kernel set holds (or covers) this address."""
        elem = self.element(target)
        if self.dry_run:
            expires = self._dry.members.get(str(elem))
            return expires is not None and (expires == 0 or expires > time.time())
        name = self._set_for(elem)
        arg = str(elem.network_address if isinstance(elem, ipaddress.IPv6Network) else elem)
        proc = self._run(["ipset", "test", name, arg], check=False)
        if proc.returncode == 0:
            return True
        if "is NOT in set" in proc.stderr or "is NOT in set" in proc.stdout:
            return False
        raise FirewallError(
            f"ipset test {name} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
