"""Kernel ⇄ ledger agreement: the start-up reconcile and the periodic drift check.

- What the ledger holds (store + backlog) is what the kernel must hold; rows for targets
  that are now trusted, protected, whitelisted or invalid are dropped (the firewall never
  bans those, whatever the path).
- An empty store next to a populated kernel set is not "no bans" (a 0-byte or missing
  fsguard.db would otherwise wipe the kernel): the kernel entries are adopted into the
  store, or kept without records per `security.keep_foreign_entries`, and this is logged
  at WARNING. `fsguard reconcile --from-empty` says the empty store is deliberate.
- The drift check runs the same comparison every `security.drift_check_interval` seconds
  and repairs what differs (entries deleted by hand, lost after a kernel-side flush,
  foreign ones added), counted in fsguard_firewall_drift_repaired_total.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable

from shared.ops.firewall_state import ReconcileResult

from .backend import Element, FirewallError
from .entries import BanEntry
from .ledger import BanLedger
from .reconcile import kernel_timeout, parse_member
from .store import StoreError

log = logging.getLogger("fsguard.firewall")

ADOPTED_REASON = "present in the kernel while the state store was empty (adopted)"


def reconcile(
    ledger: BanLedger,
    *,
    refuse: Callable[[Element], bool],
    keep_foreign: bool,
    migrate: bool = True,
    adopt_if_empty: bool = True,
) -> ReconcileResult:
    started = time.monotonic()
    kernel = ledger.kernel
    result = ReconcileResult()
    if migrate and not kernel.dry_run:
        result.migrated = kernel.ensure()
    now = ledger.clock()
    active = ledger.active(now)
    result.stored = len(active)
    want: dict[str, tuple[Element, int]] = {}
    drop: list[str] = []
    for entry in active:
        parsed = parse_member(entry.ip)
        try:
            if parsed is None:
                raise ValueError(entry.ip)
            elem = kernel.element(parsed)
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
        try:
            ledger.store.remove(ip)
        except StoreError as exc:
            result.errors.append(f"dropping stored ban {ip}: {exc}")
        log.warning("reconcile: dropped stored ban %s (trusted, protected, whitelisted or "
                    "invalid)", ip)  # fmt: skip
    result.dropped_rows = len(drop)
    if adopt_if_empty and not active:
        adopted = _adopt(ledger, refuse, keep_foreign, now)
        result.adopted = len(adopted)
        for elem, timeout in adopted:
            want[str(elem)] = (elem, timeout)
    diff = kernel.reconcile(want, keep_foreign=keep_foreign)
    result.kernel_before = diff.kernel_before
    result.added, result.retimed = diff.added, diff.retimed
    result.removed_foreign, result.kept_foreign = diff.removed_foreign, diff.kept_foreign
    result.errors.extend(diff.errors)
    result.seconds = time.monotonic() - started
    return result


def _adopt(
    ledger: BanLedger, refuse: Callable[[Element], bool], keep_foreign: bool, now: float
) -> list[tuple[Element, int]]:
    """The kernel's members, recorded in the (empty) store unless keep_foreign says to
    leave them unrecorded. Never "no bans": they stay in the kernel either way."""
    try:
        members = ledger.kernel.list_members()
    except FirewallError as exc:
        log.error("reconcile: cannot read the kernel sets to adopt them: %s", exc)
        raise
    if not members:
        return []
    if keep_foreign:
        log.warning(
            "STATE STORE IS EMPTY but the kernel sets hold %d bans: kept in the kernel "
            "without records (keep_foreign_entries). If the store was emptied on purpose, "
            "run `fsguard reconcile --from-empty`.", len(members),
        )  # fmt: skip
        return []
    adopted: list[tuple[Element, int]] = []
    entries: list[BanEntry] = []
    for text, remaining in members:
        parsed = parse_member(text)
        if parsed is None or isinstance(parsed, ipaddress.IPv4Network):
            continue
        try:
            elem = ledger.kernel.element(parsed)
        except ValueError:
            continue
        if refuse(elem):
            continue  # never adopted: reconcile removes it (it must not be banned)
        adopted.append((elem, remaining))
        entries.append(
            BanEntry(
                ip=str(elem), added_at=now, expires_at=now + remaining if remaining else 0.0,
                reason=ADOPTED_REASON, rule="adopted", source="manual",
            )
        )  # fmt: skip
    log.warning(
        "STATE STORE IS EMPTY but the kernel sets hold %d bans: adopted %d into the store "
        "instead of removing them. If the store was emptied on purpose, run "
        "`fsguard reconcile --from-empty`.", len(members), len(entries),
    )  # fmt: skip
    ledger.record(entries)
    return adopted


def drift_check(
    ledger: BanLedger, *, refuse: Callable[[Element], bool], keep_foreign: bool
) -> ReconcileResult:
    """Compare the kernel sets with the ledger and repair; counted in the stats."""
    result = reconcile(
        ledger, refuse=refuse, keep_foreign=keep_foreign, migrate=False, adopt_if_empty=False
    )
    stats = ledger.stats
    stats.drift_checks += 1
    stats.last_drift = result.repaired()
    stats.drift_repaired += result.repaired()
    if result.repaired():
        log.warning("drift check: kernel differed from the ledger, repaired: %s",
                    result.summary())  # fmt: skip
    return result
