"""The firewall's side of `reload`: apply the reloadable config keys.

The Firewall, its ListOps and Durable share one Config object, updated in place (shared/
reloadable.py); read-at-use settings (block_duration, whitelist_ttl, recidive,
keep_foreign_entries) need nothing more. Rebuilt here: the trusted networks, the config's
untrusted patterns (run-time ones stay; every change goes to the workers as a ListChange)
and the chanDaemon reporter (stopped and started again with the new settings, its
counters carried over; queued reports stay in the store's outbox). Bans, the store and
the kernel are not touched, except that bans inside newly trusted networks are lifted (as
the reconcile of a restart would).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.control import ControlError
from shared.iputil import NetworkSet
from shared.logs import escape, set_level
from shared.messages import ListChange
from shared.ops.firewall_bans import UnbanRequest
from shared.ops.reload import FirewallReloaded
from shared.reloadable import ReloadOrder, apply_in_place, touched

from .lists import UntrustedPatterns
from .reporter import Reporter

if TYPE_CHECKING:
    from .durable import Durable
    from .firewall import Firewall

log = logging.getLogger("fsguard.firewall")


def _refresh_trusted(fw: Firewall) -> None:
    nets = fw.config.security.trusted_networks
    fw.trusted = [ipaddress.ip_network(c.strip(), strict=False) for c in nets]
    fw._trusted_set = NetworkSet(nets)


def _lift_trusted(fw: Firewall) -> list[str]:
    """Lift the active bans inside the (new) trusted networks, as a restart's reconcile
    would: trusted networks are never banned, whatever the path."""
    lifted: list[str] = []
    for entry in fw.store.active(time.time()):
        try:
            elem = fw.parse_target(entry.ip)
        except ValueError:
            continue
        if not fw.is_trusted(elem):
            continue
        try:
            fw.control.op_unban(UnbanRequest(ip=entry.ip))
        except ControlError as exc:
            log.error("reload: cannot lift ban %s inside a trusted network: %s", entry.ip, exc)
            continue
        lifted.append(entry.ip)
    if lifted:
        log.warning("reload: lifted %d ban(s) inside trusted networks: %s",
                    len(lifted), ", ".join(lifted[:20]))  # fmt: skip
    return lifted


def _refresh_patterns(fw: Firewall, durable: Durable | None, old: list[str]) -> list[str]:
    """Config patterns swapped for the new config's; run-time ones kept. The changes."""
    patterns = fw.lists.untrusted
    runtime: set[str] = set()
    if durable is not None:
        runtime = {p for p, source in durable.store.patterns() if source == "runtime"}
    new = [p.strip() for p in fw.config.security.untrusted_networks if p.strip()]
    changes: list[str] = []
    for pattern in [p.strip() for p in old]:
        gone = pattern and pattern not in new and pattern not in runtime
        if gone and UntrustedPatterns.remove(patterns, pattern):  # base class: not persisted
            fw.publish(ListChange(list="untrusted", op="remove", ip=pattern))
            changes.append(f"-{pattern}")
    for pattern in new:
        if UntrustedPatterns.add(patterns, pattern):
            fw.publish(ListChange(list="untrusted", op="add", ip=pattern))
            changes.append(f"+{pattern}")
    return changes


def _refresh_reporter(fw: Firewall, durable: Durable) -> None:
    old = durable.reporter
    sec = fw.config.security
    new: Reporter | None = None
    if sec.chandaemon.enabled and not sec.dry_run and sec.auto_block_enabled:
        new = Reporter(durable.store, sec.chandaemon)
    if old is not None:
        old.stop()
        if new is not None:
            new.sent, new.failed, new.dropped, new.duplicates = (
                old.sent, old.failed, old.dropped, old.duplicates,
            )  # fmt: skip
    durable.reporter = new
    durable.bans.reporter = new
    if new is not None:
        new.start()
    log.info("chanDaemon reporting %s", "on" if new is not None and new.enabled else "off")


def apply(fw: Firewall, durable: Durable | None, order: ReloadOrder) -> FirewallReloaded:
    old_untrusted = list(fw.config.security.untrusted_networks)
    applied = apply_in_place(fw.config, order)
    result = FirewallReloaded(applied=applied)
    if touched(applied, "security.trusted_networks"):
        _refresh_trusted(fw)
        result.liftedBans = _lift_trusted(fw)
    if touched(applied, "security.untrusted_networks"):
        result.untrusted = _refresh_patterns(fw, durable, old_untrusted)
    if durable is not None and touched(applied, "security.chandaemon."):
        _refresh_reporter(fw, durable)
    if "logging.level" in applied:
        set_level(fw.config.logging.level)
    if applied:
        log.info("reloaded: %s", escape(", ".join(applied)))
    return result


def handler(fw: Firewall, durable: Durable | None) -> Callable[[ReloadOrder], FirewallReloaded]:
    """The typed handler of the firewall's `reload` op (shared/ops/firewall.py RELOAD)."""
    return lambda order: apply(fw, durable, order)
