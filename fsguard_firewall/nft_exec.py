"""Running `nft` for the nftables backend, and reading fsguard's table back.

No shell, a timeout on every run, and one `nft -f -` transaction per write (atomic:
all of it or none reaches the kernel).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import subprocess
import time
from collections.abc import Sequence
from typing import Any, Unpack

from . import nft_ruleset as nr
from . import process_group as tool
from .backend import BackendBase, BackendOptions, FirewallError

log = logging.getLogger("fsguard_firewall.nft_backend")

INSTALL_HINT = "install it (apt-get install nftables / dnf install nftables)"
MISSING = "No such file or directory"
LIST_READS = 6  # dumps before giving up on a consistent one (see read_table)


class NftRunner(BackendBase):
    """Runs nft (optionally under `command_prefix`, e.g. `ip netns exec NS`)."""

    def __init__(
        self,
        table: str,
        *,
        list_timeout: float = 60.0,
        **options: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**options)
        self.table = table
        self.list_timeout = max(list_timeout, self.command_timeout)
        self._read: tuple[float, nr.TableState] | None = None  # last read_table (monotonic)

    def _run(
        self, args: Sequence[str], *, stdin: str | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.command_prefix, "nft", *args]
        limit = timeout or self.command_timeout
        popen = tool.start(argv, name="nft", hint=INSTALL_HINT, stdin=stdin is not None)
        out, err = tool.finish(popen, limit, f"nft {' '.join(args[:3])}", stdin=stdin)
        proc = subprocess.CompletedProcess(argv, popen.returncode, out, err)
        if self.command_prefix and proc.returncode != 0 and "exec of" in proc.stderr:
            raise FirewallError(f"nft not found: {INSTALL_HINT}: {proc.stderr.strip()}")
        return proc

    def _transaction(self, lines: Sequence[str], what: str) -> None:
        """Run `lines` as one `nft -f -` transaction; FirewallError when refused."""
        text = "\n".join(lines) + "\n"
        self._read = None  # a write: the last read no longer stands for the kernel
        if self.dry_run:
            log.info("DRY RUN: would run nft -f - (%s):\n%s", what, text.rstrip())
            return
        proc = self._run(["-f", "-"], stdin=text)
        if proc.returncode != 0:
            raise FirewallError(
                f"nft {what} failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )

    def probe_timeout_update(self) -> bool:
        """Whether `add element` re-arms an existing element's timeout (Linux >= 6.10).

        Probed in a throwaway table; when it does not, bans are written as
        add/delete/add so an extended ban is extended in the kernel too.
        """
        probe = f"{self.table}-probe"
        with contextlib.suppress(FirewallError):
            self._transaction([f"delete table inet {probe}"], "drop probe table")
        try:
            self._transaction(
                [
                    f"table inet {probe} {{ set p {{ type ipv4_addr; flags timeout; }}; }}",
                    f"add element inet {probe} p {{ 192.0.2.0 timeout 60s }}",
                ],
                "probe",
            )
            self._transaction(
                [f"add element inet {probe} p {{ 192.0.2.0 timeout 7200s }}"], "probe"
            )
            proc = self._run(["-j", "list", "set", "inet", probe, "p"])
            members = nr.parse_set_elements(proc.stdout) if proc.returncode == 0 else []
        finally:
            with contextlib.suppress(FirewallError):
                self._transaction([f"delete table inet {probe}"], "drop probe table")
        updates = bool(members) and members[0][1] > 60
        log.info(
            "nft add element %s timeouts in place", "updates" if updates else "does not update"
        )
        return updates

    def _table_json(self, table: str, *, terse: bool) -> str | None:
        """`nft -j [-t] list table inet <table>`, or None when the table does not exist."""
        proc = self._run(
            ["-j", *(["-t"] if terse else []), "list", "table", "inet", table],
            timeout=self.list_timeout,
        )
        if proc.returncode == 0:
            return proc.stdout
        if MISSING in proc.stderr:
            return None
        raise FirewallError(f"nft list table inet {table} failed: {proc.stderr.strip()}")

    def read_table(self) -> nr.TableState | None:
        """fsguard's table with every element, from a consistent dump (None: no table).

        One `nft -j list table` for structure and both sets: nft 1.0.6 fetches every
        element of the table before any list anyway. The kernel dumps a hash set in
        chunks resumed by count; when it resizes the table between chunks (for a while
        after a bulk insert) the dump repeats some elements and skips as many — seen:
        100,000 listed, 95,391 distinct. A repeat is the sign: read again.
        """
        for attempt in range(LIST_READS):
            text = self._table_json(self.table, terse=False)
            if text is None:
                self._read = None
                return None
            state = nr.parse_table(text)
            if state.consistent():
                break
            log.debug("nft list table %s: repeated elements, reading again", self.table)
            time.sleep(0.2 * (attempt + 1))
        else:
            log.warning("nft list table %s stayed inconsistent after %d reads",
                        self.table, LIST_READS)  # fmt: skip
            state.elements = {k: list(dict(v).items()) for k, v in state.elements.items()}
        self._read = (time.monotonic(), state)
        return state

    def recent_read(self, max_age: float) -> tuple[nr.TableState, float] | None:
        """The last read and its age, when younger than `max_age` and no write since."""
        if self._read is None:
            return None
        age = time.monotonic() - self._read[0]
        return (self._read[1], age) if age <= max_age else None

    def ruleset(self) -> dict[str, Any]:
        """The table as the kernel has it, without elements (for status and the API);
        a read of the last 2 s is reused (op iptables lists the members just before)."""
        recent = self.recent_read(2.0)
        state: nr.TableState | None = recent[0] if recent else None
        if state is None and not self.dry_run:
            text = self._table_json(self.table, terse=True)
            state = None if text is None else nr.parse_table(text)
        if state is None:
            return {"table": f"inet {self.table}", "present": False, "rules": []}
        counters = state.counters
        rules = [" ".join(shape) for _, shape in state.rules]
        return {
            "table": f"inet {self.table}",
            "present": True,
            "chain": {k: state.chains.get(nr.CHAIN, {}).get(k) for k in ("hook", "prio", "policy")},
            "sets": {n: {"type": s.type, "flags": list(s.flags)} for n, s in state.sets.items()},
            "rules": rules,
            "counters": counters,
        }


def prefixed(text: str, prefix: int) -> str:
    """`addr/prefix` for an address aligned to `prefix` < 128; other text unchanged."""
    if prefix >= 128:
        return text
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        return text
    net = ipaddress.IPv6Network((addr, prefix), strict=False)
    return f"{addr}/{prefix}" if net.network_address == addr else text
