"""Kernel firewall: one ipset per family behind one iptables DROP rule per family.

Only this module runs ipset/iptables. Every element written to ipset's input is
re-rendered from an `ipaddress` object (never the caller's text), commands run
without a shell and with a timeout, and a batch of bans is one `ipset restore`
process. Setup never flushes or recreates an existing set.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backend import MAX_TIMEOUT, Element, FirewallError, KernelDiff, Target
from .elements import to_element
from .ipset_netlink import IpsetNetlink, NetlinkPath
from .ipset_sets import ensure_set_params, parse_save
from .ipset_sets import ruleset as ipset_ruleset
from .reconcile import reconcile_members

__all__ = ["MAX_TIMEOUT", "Element", "FirewallError", "KernelFirewall", "Target"]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,28}$")
_ERROR_LINE_RE = re.compile(r"Error in line (\d+)")
_FULL_RE = re.compile(r"is full|cannot add more elements")
_INSTALL_HINT = "install it (apt-get install ipset iptables / dnf install ipset iptables)"


@dataclass
class _Line:
    text: str
    element: str
    set_name: str
    # the same line for the netlink path (op "add"/"del", parsed element, timeout)
    op: str = ""
    elem: Element | None = None
    timeout: int | None = None


@dataclass
class _DryState:
    # element -> expiry wall time (0 = never)
    members: dict[str, float] = field(default_factory=dict)


def clamp_timeout(seconds: int) -> int:
    """A ban timeout ipset accepts: 0 stays permanent, the rest is 1..MAX_TIMEOUT."""
    if seconds < 0:
        raise ValueError(f"negative timeout {seconds}")
    return min(seconds, MAX_TIMEOUT)


class KernelFirewall:
    """Single writer of the fsguard ipsets and their DROP rules (a backend.KernelBackend)."""

    kind = "ipset"

    def __init__(
        self,
        set_name: str,
        chain: str,
        *,
        default_timeout: int,
        dry_run: bool = False,
        ipv6_prefix: int = 128,
        command_timeout: float = 5.0,
        command_prefix: Sequence[str] = (),
        netlink: Callable[[], IpsetNetlink] | None = None,
    ) -> None:
        if not _NAME_RE.match(set_name):
            raise ValueError(f"invalid ipset name {set_name!r} (1-28 chars of A-Za-z0-9_.:-)")
        if not _NAME_RE.match(chain):
            raise ValueError(f"invalid iptables chain {chain!r} (1-28 chars of A-Za-z0-9_.:-)")
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be 1..128, got {ipv6_prefix}")
        self.set_v4 = set_name
        self.set_v6 = set_name + "-v6"
        self.chain = chain
        self.default_timeout = clamp_timeout(int(default_timeout))
        self.dry_run = dry_run
        self.ipv6_prefix = ipv6_prefix
        self.command_timeout = command_timeout
        self.command_prefix = list(command_prefix)
        # ipset add/del over netlink when ipset would run right here (no command prefix)
        # or through the given factory (a socket opened in the target namespace)
        self._netlink = NetlinkPath(netlink or (None if command_prefix else IpsetNetlink))
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
        try:
            # Own process group: a hung command (and any child holding its pipes) is
            # killed as a whole, so a timeout really ends the wait.
            popen = subprocess.Popen(
                full, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise FirewallError(f"{exc.filename or argv[0]} not found: {_INSTALL_HINT}") from exc
        try:
            out, err = popen.communicate(stdin, timeout=self.command_timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(popen)
            raise FirewallError(
                f"{' '.join(argv[:3])} timed out after {self.command_timeout}s"
            ) from exc
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
        lines: list[_Line] = []
        for target, timeout in bans:
            elem = self.element(target)
            name = self._set_for(elem)
            secs = clamp_timeout(int(timeout))
            lines.append(_Line(f"add {name} {elem} timeout {secs}", str(elem), name,
                               "add", elem, secs))
        for target in unbans:
            elem = self.element(target)
            name = self._set_for(elem)
            lines.append(_Line(f"del {name} {elem}", str(elem), name, "del", elem, None))
        return self._start(lines)

    def _start(self, lines: list[_Line]) -> PendingApply:
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
        try:
            return subprocess.Popen(
                [*self.command_prefix, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise FirewallError(f"{exc.filename or argv[0]} not found: {_INSTALL_HINT}") from exc

    def _dry_apply(self, lines: list[_Line]) -> None:
        log.info("DRY RUN: would run ipset restore -exist with %d lines", len(lines))
        now = time.time()
        for line in lines:
            log.debug("DRY RUN: would %s", line.text)
            if line.text.startswith("add "):
                secs = int(line.text.rsplit(" ", 1)[1])
                self._dry.members[line.element] = now + secs if secs else 0.0
            else:
                self._dry.members.pop(line.element, None)

    def _restore(
        self, lines: list[_Line], first: tuple[int, str] | None = None
    ) -> int:
        """Run (or, given `first` = (returncode, stderr) of a run already made, finish)
        `ipset restore` over `lines`, retrying past a rejected line."""
        failed: list[tuple[str, str]] = []
        applied = 0
        pending = lines
        attempts = 0
        while pending:
            attempts += 1
            if first is not None:
                returncode, stderr = first
                first = None
            else:
                proc = self._run(
                    ["ipset", "restore", "-exist"],
                    stdin="\n".join(line.text for line in pending) + "\n",
                    check=False,
                )
                returncode, stderr = proc.returncode, proc.stderr
            if returncode == 0:
                applied += len(pending)
                break
            err = stderr.strip()
            match = _ERROR_LINE_RE.search(err)
            if match is None or attempts >= 3:
                failed.extend((line.element, err) for line in pending)
                break
            bad = int(match.group(1))  # 1-based; the lines before it were applied
            bad = max(1, min(bad, len(pending)))
            applied += bad - 1
            failed.append((pending[bad - 1].element, err))
            pending = pending[bad:]
        if failed:
            raise FirewallError(
                f"ipset restore: {len(failed)} of {len(lines)} lines failed: {failed[0][1]}",
                failed=failed,
                applied=applied,
                full=any(_FULL_RE.search(err) for _, err in failed),
            )
        return applied

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


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill a timed-out command and everything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)


class PendingApply:
    """An `ipset restore` under way (see KernelFirewall.apply_async)."""

    def __init__(
        self,
        kernel: KernelFirewall,
        lines: list[_Line],
        proc: subprocess.Popen[str] | None,
        *,
        dry: bool = False,
        applied: int = 0,
    ) -> None:
        self._kernel = kernel
        self._lines = lines
        self._proc = proc
        self._dry = dry
        self._applied = applied  # lines already applied over netlink
        if proc is not None and proc.stdin is not None:
            # Feed ipset now so it works while the caller commits; a pipe holds 64 KiB,
            # beyond that this write paces itself on ipset's reading.
            stdin, proc.stdin = proc.stdin, None  # communicate() must not touch it again
            with contextlib.suppress(BrokenPipeError):  # ipset died: its stderr says why
                stdin.write("\n".join(line.text for line in lines) + "\n")
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    @property
    def running(self) -> bool:
        """True while an `ipset restore` still works (False: all done over netlink)."""
        return self._proc is not None

    def wait(self) -> int:
        """Lines applied; FirewallError (with .failed/.applied) as `apply` raises."""
        proc = self._proc
        if proc is None:
            return len(self._lines) if self._dry else self._applied
        try:
            _, stderr = proc.communicate(timeout=self._kernel.command_timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise FirewallError(
                f"ipset restore timed out after {self._kernel.command_timeout}s",
                failed=[(line.element, "timeout") for line in self._lines],
                applied=0,
            ) from exc
        try:
            return self._applied + self._kernel._restore(
                self._lines, first=(proc.returncode, stderr))
        except FirewallError as exc:
            exc.applied += self._applied
            raise
