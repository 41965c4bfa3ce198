"""nftables backend: fsguard's own `inet` table, two timeout sets, one input chain.

Only nft_exec.py and this module run `nft`. Every batch of bans/unbans is one
`nft -f -` transaction (atomic: all of it reaches the kernel or none), run without a
shell and with a timeout. When nft refuses, its stderr names input lines; each line maps
back to the element(s) it carries (nft_ruleset.Batch), those are reported failed and the
batch is retried without them, so FirewallError.failed lists exactly what the kernel
lacks. Implements backend.KernelBackend; docs/nftables.md.
Sets are never flushed: changing their parameters rebuilds the table in one
transaction that carries every element over (no instant without the drop rules).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from . import nft_ruleset as nr
from . import process_group as tool
from .backend import BackendOptions, Element, FirewallError, KernelDiff, Target, clamp_timeout
from .elements import to_element
from .nft_exec import INSTALL_HINT, MISSING, NftRunner, prefixed
from .nft_pending import NftPending
from .reconcile import reconcile_members

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8  # nft runs per batch: each retry drops at least one refused element
READ_REUSE = 10.0  # seconds a table read (ensure's) may stand in for list_members
SET_FULL = "Too many open files in system"  # ENFILE: the set holds `size` elements


class NftBackend(NftRunner):
    """Single writer of fsguard's nftables table (a backend.KernelBackend)."""

    kind = "nftables"

    def __init__(
        self,
        table: str,
        set_name: str,
        *,
        list_timeout: float = 60.0,
        **options: Unpack[BackendOptions],
    ) -> None:
        super().__init__(table, list_timeout=list_timeout, **options)
        self.spec = nr.table_spec(table, set_name, self.ipv6_prefix)
        self.set_v4 = self.spec.v4.name
        self.set_v6 = self.spec.v6.name
        self.chain = nr.CHAIN
        self.updates_timeouts: bool | None = None  # probed by ensure (kernel >= 6.10)
        self._reuse_read = False  # list_members may use ensure's read (see READ_REUSE)
        self._dry: dict[str, float] = {}  # dry run: element -> expiry (0 = never)

    def element(self, target: Target) -> Element:
        return to_element(target, self.ipv6_prefix)

    def _exact(self, target: Target) -> Element:
        """The element an unban deletes. Callers pass elements (`element()` output); a
        bare IPv6 address with prefix bans is an entry listed as such — a foreign one
        that never matched — and is deleted exactly, never widened to its prefix."""
        if isinstance(target, ipaddress.IPv6Address) and target.ipv4_mapped is None:
            return target
        return self.element(target)

    def _set_for(self, elem: Element) -> str:
        return self.set_v4 if elem.version == 4 else self.set_v6

    # --- setup -------------------------------------------------------------------------

    def ensure(self) -> list[str]:
        """Create the table if missing; rebuild it (keeping its elements) if it differs.

        Returns the names of the sets whose parameters were migrated. Never flushes.
        """
        if self.dry_run:
            self._transaction(self.spec.render(), "create table (if missing)")
            return []
        if self.updates_timeouts is None:
            self.updates_timeouts = self.probe_timeout_update()
        # One full read: the structure now, the elements for the reconcile that follows
        # (list_members reuses it when nothing was written in between).
        state = self.read_table()
        self._reuse_read = True
        migrated: list[str] = []
        if state is None:
            self._transaction(self.spec.render(), "create table")
            log.info(
                "created nftables table inet %s (sets %s, %s; chain %s priority %d)",
                self.table, self.set_v4, self.set_v6, nr.CHAIN, self.spec.priority,
            )  # fmt: skip
        else:
            diffs = nr.differences(self.spec, state)
            if diffs:
                migrated = self._migrate(state, diffs)
        return migrated

    def ensure_setup(self) -> None:
        self.ensure()

    def _migrate(self, state: nr.TableState, diffs: list[str]) -> list[str]:
        """Replace the table by the wanted one in one transaction, elements carried over."""
        keep: dict[str, tuple[Element, int]] = {}
        dropped = 0
        for name in (n for n in (self.set_v4, self.set_v6) if n in state.sets):
            old_prefix = nr.rule_prefix(state, name) if name == self.set_v6 else 128
            for raw, remaining in state.elements.get(name, []):
                text = prefixed(raw, old_prefix) if old_prefix < 128 else raw
                parsed = _parse(text)
                try:
                    if parsed is None or isinstance(parsed, ipaddress.IPv4Network):
                        raise ValueError(text)
                    if old_prefix < 128 and "/" not in text:
                        raise ValueError(text)  # never matched under the old mask: not a ban
                    elem = self.element(parsed)
                except ValueError:
                    dropped += 1
                    continue
                key = str(elem)
                prev = keep.get(key)
                if prev is None or (prev[1] != 0 and (remaining == 0 or remaining > prev[1])):
                    keep[key] = (elem, remaining)
        batch = nr.Batch()
        self._blocks(batch, "add", [(i, e, t) for i, (e, t) in enumerate(keep.values())])
        lines = [f"delete table inet {self.table}", *self.spec.render(), *batch.lines]
        self._transaction(lines, "rebuild table")
        changed = nr.changed_sets(self.spec, state)
        log.warning(
            "rebuilt nftables table inet %s (%s); %d elements kept, %d not representable",
            self.table, "; ".join(diffs), len(keep), dropped,
        )  # fmt: skip
        return changed

    def teardown(self) -> bool:
        """Delete fsguard's table (sets, chain, rules) and nothing else; False if absent."""
        existed = False
        for table in (self.table, f"{self.table}-probe"):
            if self.dry_run or self._table_json(table, terse=True) is not None:
                self._transaction([f"delete table inet {table}"], "teardown")
                existed = existed or table == self.table
        return existed

    # --- bans --------------------------------------------------------------------------

    def _blocks(
        self, batch: nr.Batch, verb: str, items: Sequence[tuple[int, Element, int | None]]
    ) -> None:
        """One `<verb> element` block per set, elements rendered from ipaddress objects."""
        for name in (self.set_v4, self.set_v6):
            rows = [(i, nr.render_element(e, t)) for i, e, t in items if self._set_for(e) == name]
            batch.block(verb, self.table, name, rows)

    def _render(self, items: list[tuple[Element, int | None]], subset: Sequence[int]) -> nr.Batch:
        """The transaction for items[i] (timeout None = unban) over the indices `subset`."""
        batch = nr.Batch()
        bans = [(i, items[i][0], items[i][1]) for i in subset if items[i][1] is not None]
        unbans = [(i, items[i][0], None) for i in subset if items[i][1] is None]
        if not self.updates_timeouts and bans:
            # Make the final add create the element afresh (old kernels keep the old timeout).
            self._blocks(batch, "add", [(i, e, None) for i, e, _ in bans])
            self._blocks(batch, "delete", [(i, e, None) for i, e, _ in bans])
        self._blocks(batch, "add", bans)
        # add-then-delete: deleting an element that is not there is not an error.
        self._blocks(batch, "add", unbans)
        self._blocks(batch, "delete", unbans)
        return batch

    def apply(self, bans: Sequence[tuple[Target, int]], unbans: Sequence[Target] = ()) -> int:
        """Add `bans` (target, seconds; 0 = permanent), delete `unbans` (see `_exact`), in
        one transaction.

        Every element is validated first (ValueError/TypeError, nothing run). Returns
        the number of elements applied; FirewallError lists those the kernel refused.
        """
        return self.apply_async(bans, unbans).wait()

    def apply_async(
        self, bans: Sequence[tuple[Target, int]], unbans: Sequence[Target] = ()
    ) -> NftPending:
        """Like `apply`, but returns once nft has its input; `wait()` gives the result."""
        latest: dict[str, tuple[Element, int | None]] = {}
        for target, timeout in bans:
            elem = self.element(target)
            latest[str(elem)] = (elem, clamp_timeout(int(timeout)))
        unban_items: dict[str, tuple[Element, int | None]] = {}
        for target in unbans:
            elem = self._exact(target)
            unban_items[str(elem)] = (elem, None)
        items = [*latest.values(), *unban_items.values()]
        if not items:
            return NftPending(self, items, None)
        if self.dry_run:
            self._dry_apply(items)
            return NftPending(self, items, None)
        if self.updates_timeouts is None:
            self.updates_timeouts = False  # not probed (ensure not run): the safe form
        self._read = None  # a write: the last read no longer stands for the kernel
        batch = self._render(items, range(len(items)))
        argv = [*self.command_prefix, "nft", "-f", "-"]
        proc = tool.start(argv, name="nft", hint=INSTALL_HINT, stdin=True)
        return NftPending(self, items, proc, batch)

    def _dry_apply(self, items: list[tuple[Element, int | None]]) -> None:
        batch = self._render(items, range(len(items)))
        log.info("DRY RUN: would run nft -f - with %d elements:\n%s", len(items), batch.text())
        now = time.time()
        for elem, timeout in items:
            if timeout is None:
                self._dry.pop(str(elem), None)
            else:
                self._dry[str(elem)] = now + timeout if timeout else 0.0

    def _finish(self, items: list[tuple[Element, int | None]], first: tuple[int, str]) -> int:
        """Given the first run's (returncode, stderr), retry without refused elements."""
        pending = list(range(len(items)))
        failed: list[tuple[str, str]] = []
        result: tuple[int, str] | None = first
        last_error = ""
        for _attempt in range(MAX_ATTEMPTS):
            if result is None:
                proc = self._run(["-f", "-"], stdin=self._render(items, pending).text())
                result = (proc.returncode, proc.stderr)
            returncode, stderr = result
            result = None
            if returncode == 0:
                applied = len(pending)
                break
            last_error = stderr.strip()
            batch = self._render(items, pending)
            refused: dict[int, str] = {}
            for line, message in nr.parse_errors(stderr):
                for index in batch.owners_of(line):
                    refused.setdefault(index, message)
            if not refused:  # nothing located: the whole transaction failed as one
                failed.extend((str(items[i][0]), last_error) for i in pending)
                pending, applied = [], 0
                break
            failed.extend((str(items[i][0]), msg) for i, msg in sorted(refused.items()))
            pending = [i for i in pending if i not in refused]
            if not pending:
                applied = 0
                break
        else:
            note = f"not applied: nft refused {MAX_ATTEMPTS} retries; last: {last_error}"
            failed.extend((str(items[i][0]), note) for i in pending)
            applied = 0
        if failed:
            raise FirewallError(
                f"nft: {len(failed)} of {len(items)} elements failed: {failed[0][1]}",
                failed=failed,
                applied=applied,
                full=any(SET_FULL in err for _, err in failed),
            )
        return applied

    # --- reads -------------------------------------------------------------------------

    def list_members(self) -> list[tuple[str, int]]:
        """(element, remaining timeout seconds; 0 = permanent) for both sets, from one
        consistent dump (or the one `ensure` just made, aged, when nothing was written
        since: at 100k elements each read costs seconds)."""
        if self.dry_run:
            now = time.time()
            for elem, expires in list(self._dry.items()):
                if expires and expires <= now:
                    del self._dry[elem]
            return [(e, max(1, int(x - now)) if x else 0) for e, x in self._dry.items()]
        recent = self.recent_read(READ_REUSE) if self._reuse_read else None
        self._reuse_read = False  # ensure's read stands in once, never a read of ours
        state, age = recent if recent else (self.read_table(), 0.0)
        if state is None:
            raise FirewallError(f"nft table inet {self.table} does not exist")
        out: list[tuple[str, int]] = []
        for name in (self.set_v4, self.set_v6):
            if name not in state.elements:
                raise FirewallError(f"nft set {name} does not exist in inet {self.table}")
            for raw, remaining in state.elements[name]:
                if remaining and remaining - age < 1:
                    continue  # expired since the read
                text = prefixed(raw, self.ipv6_prefix) if name == self.set_v6 else raw
                out.append((text, int(remaining - age) if remaining else 0))
        return out

    def contains(self, target: Target) -> bool:
        """Whether the kernel set holds (or, with prefix bans, covers) this address."""
        elem = self.element(target)
        if self.dry_run:
            expires = self._dry.get(str(elem))
            return expires is not None and (expires == 0 or expires > time.time())
        name = self._set_for(elem)
        # A check-only (-c) delete: the kernel says whether the element is there and
        # rolls back. `nft get element` would first fetch every element (2-3 s at 100k).
        text = f"delete element inet {self.table} {name} {{ {nr.render_element(elem, 0)} }}\n"
        proc = self._run(["-c", "-f", "-"], stdin=text)
        if proc.returncode == 0:
            return True
        if f"Could not process rule: {MISSING}" in proc.stderr:
            return False
        raise FirewallError(f"nft check of {name} failed: {proc.stderr.strip()}")

    def remove(self, targets: Sequence[Target]) -> int:
        """Delete elements (absent ones are not an error), each exactly (see `_exact`)."""
        return self.apply([], unbans=targets)

    # --- reconcile ---------------------------------------------------------------------

    def reconcile(
        self, want: Mapping[str, tuple[Element, int]], *, keep_foreign: bool
    ) -> KernelDiff:
        """Recreate the table if it went (a `flush ruleset`, a hand edit), then make the
        sets hold exactly `want`. Run at start and by the periodic drift check."""
        if not self.dry_run and not self._intact():
            self.ensure()
        return reconcile_members(self, want, keep_foreign=keep_foreign)

    def _intact(self) -> bool:
        """Whether the chain and both sets exist: a `nft -c` (check-only) transaction
        creating them must fail with "File exists" three times. Milliseconds, where any
        `nft list table/chain` fetches every set element first (seconds at 100k); the
        rules themselves are verified by `ensure()` at start and by `fsguard reconcile`."""
        spec = self.spec
        lines = [
            f"create chain inet {self.table} {nr.CHAIN} {{ type filter hook input "
            f"priority {spec.priority}; policy accept; }}",
            *(f"create set inet {self.table} {s.name} {{ type {s.type}; flags "
              f"{','.join(s.flags)}; size {nr.SET_SIZE}; }}" for s in (spec.v4, spec.v6)),
        ]  # fmt: skip
        proc = self._run(["-c", "-f", "-"], stdin="\n".join(lines) + "\n")
        exists = {line for line, msg in nr.parse_errors(proc.stderr) if "File exists" in msg}
        return proc.returncode != 0 and exists == {1, 2, 3}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "chain": self.chain,
            "ipset": self.set_v4,
            "table": f"inet {self.table}",
            "ruleset": self.ruleset(),
        }


def _parse(text: str) -> Element | ipaddress.IPv4Network | None:
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return net.network_address if net.prefixlen == net.max_prefixlen else net
        return ipaddress.ip_address(text)
    except ValueError:
        return None
