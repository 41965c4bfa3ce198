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
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fsguard_firewall.ipset_netlink import IpsetNetlink

log = logging.getLogger(__name__)

Target = (
    ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network
)
Element = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv6Network

MAX_TIMEOUT = 2147483  # ipset's largest timeout, seconds (0 = permanent)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,28}$")
_ERROR_LINE_RE = re.compile(r"Error in line (\d+)")
_INSTALL_HINT = "install it (apt-get install ipset iptables / dnf install ipset iptables)"


class FirewallError(Exception):
    """A kernel command failed, timed out, or its binary is missing.

    After a failed `apply`, `failed` lists (element, error) for every element that
    did not reach the kernel and `applied` counts the ones that did.
    """

    def __init__(
        self, message: str, *, failed: Sequence[tuple[str, str]] = (), applied: int = 0
    ) -> None:
        super().__init__(message)
        self.failed = list(failed)
        self.applied = applied


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
    """Single writer of the fsguard ipsets and their DROP rules."""

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
        # ipset over netlink when ipset would run right here (no command prefix), or
        # through the given factory (a socket opened in the target namespace)
        self._netlink_factory = netlink or (None if command_prefix else IpsetNetlink)
        self._nl: IpsetNetlink | None = None
        self._dry = _DryState()

    # --- element rendering -------------------------------------------------------

    def element(self, target: Target) -> Element:
        """The kernel element a target becomes (IPv6 aggregated to ipv6_prefix).

        Raises ValueError for an IPv4 network wider than one address or an IPv6
        network wider than the configured ban prefix.
        """
        if isinstance(target, ipaddress.IPv4Network):
            if target.prefixlen != 32:
                raise ValueError(f"IPv4 networks are not banned as a whole: {target}")
            return target.network_address
        if isinstance(target, ipaddress.IPv4Address):
            return target
        if isinstance(target, ipaddress.IPv6Address):
            if target.ipv4_mapped is not None:
                return target.ipv4_mapped
            if self.ipv6_prefix == 128:
                return target
            return ipaddress.IPv6Network((target, self.ipv6_prefix), strict=False)
        if isinstance(target, ipaddress.IPv6Network):
            if target.prefixlen < self.ipv6_prefix:
                raise ValueError(
                    f"IPv6 prefix {target} is wider than the ban prefix /{self.ipv6_prefix}"
                )
            if self.ipv6_prefix == 128:
                return target.network_address
            return ipaddress.IPv6Network((target.network_address, self.ipv6_prefix), strict=False)
        raise TypeError(f"not an ipaddress object: {type(target).__name__}")

    def _set_for(self, element: Element) -> str:
        return self.set_v4 if element.version == 4 else self.set_v6

    # --- command execution -------------------------------------------------------

    def _run(
        self, argv: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        full = [*self.command_prefix, *argv]
        try:
            proc = subprocess.run(
                full,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.command_timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise FirewallError(f"{exc.filename or argv[0]} not found: {_INSTALL_HINT}") from exc
        except subprocess.TimeoutExpired as exc:
            raise FirewallError(
                f"{' '.join(argv[:3])} timed out after {self.command_timeout}s"
            ) from exc
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
        if self._netlink_ok():
            lines, applied = self._netlink_apply(lines)
            if not lines:
                return PendingApply(self, [], None, applied=applied)
        return PendingApply(self, lines, self._popen(["ipset", "restore", "-exist"]),
                            applied=applied)

    def _netlink_ok(self) -> bool:
        if self._nl is None and self._netlink_factory is not None:
            try:
                self._nl = self._netlink_factory()
            except OSError as exc:
                self._netlink_factory = None
                log.warning("ipset over netlink unavailable (%s): using ipset restore", exc)
        return self._nl is not None

    def _netlink_apply(self, lines: list[_Line]) -> tuple[list[_Line], int]:
        """Apply over netlink; return (lines the kernel refused, for ipset restore to
        retry and report, number applied). A socket failure hands every line back."""
        assert self._nl is not None
        ops = [(ln.op, ln.set_name, ln.elem, ln.timeout) for ln in lines if ln.elem is not None]
        # (every line built by apply_async has its element)
        if len(ops) != len(lines):
            return lines, 0
        try:
            codes = self._nl.apply(ops)
        except OSError as exc:
            log.warning("ipset over netlink failed (%s): retrying with ipset restore", exc)
            self._nl.close()
            self._nl = None
            return lines, 0
        refused = [ln for ln, code in zip(lines, codes, strict=True) if code]
        return refused, len(lines) - len(refused)

    def _popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start a command with piped stdio (its timeout is applied by the waiter)."""
        try:
            return subprocess.Popen(
                [*self.command_prefix, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
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
            members.extend(_parse_save(proc.stdout, name))
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


def _parse_save(text: str, set_name: str) -> list[tuple[str, int]]:
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
            proc.kill()
            proc.communicate()
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
