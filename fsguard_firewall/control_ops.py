"""The firewall's ban control ops (status, listings, manual ban/unban, stats): the API's
and the CLI's view of the ban ledger. Lists (whitelist, patterns) are in lists.py."""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from shared.config import MAX_BAN_SECONDS
from shared.control import ControlError
from shared.iputil import parse_ip
from shared.logs import escape
from shared.messages import ListChange
from shared.ops import firewall as ops
from shared.ops.base import Empty, Op, OpTable, RepT, ReqT
from shared.ops.common import Ping
from shared.ops.firewall_bans import (
    ActiveBans,
    BanRequest,
    BanResult,
    BlacklistEntry,
    BlacklistLookup,
    FirewallStats,
    FirewallStatus,
    IpRequest,
    IptablesInfo,
    StatusMessage,
    UnbanRequest,
)
from shared.protected import IPAddress

from .backend import Element, FirewallError
from .entries import BanEntry
from .ledger import Intent, kernel_timeout_for

if TYPE_CHECKING:
    from .firewall import Firewall

log = logging.getLogger("fsguard.firewall")


# Ops recorded in the audit stream: manual bans and list changes.
AUDITED: tuple[Op[Any, Any], ...] = (
    ops.BAN, ops.UNBAN, ops.WHITELIST_ADD, ops.WHITELIST_REMOVE, ops.UNTRUSTED_ADD,
    ops.UNTRUSTED_REMOVE,
)  # fmt: skip


def _client(req: BanRequest) -> list[IPAddress]:
    """The API client's address passed with a manual ban (`client`), if any."""
    raw = req.client
    if not isinstance(raw, str) or not raw:
        return []
    try:
        return [parse_ip(raw)]
    except ValueError:
        raise ControlError(f"invalid client address: {raw!r}", 400) from None


class ControlOps:
    def __init__(self, fw: Firewall) -> None:
        self.fw = fw
        self._manual_seq = itertools.count(1)

    def bind(self, table: OpTable) -> None:
        """Bind the ban ops and the list ops (lists.py), then wrap the audited ones."""
        table.bind(ops.PING, lambda req: Ping(role="firewall", pid=os.getpid()))
        table.bind(ops.STATUS, self.op_status)
        table.bind(ops.BLACKLIST, self.op_blacklist)
        table.bind(ops.BLACKLIST_GET, self.op_blacklist_get)
        table.bind(ops.IPTABLES, self.op_iptables)
        table.bind(ops.BAN, self.op_ban)
        table.bind(ops.UNBAN, self.op_unban)
        table.bind(ops.STATS, self.op_stats)
        self.fw.lists.bind(table)
        for op in AUDITED:
            table.rebind(op, self._audited(op, table.bound(op)))

    def _audited(
        self, op: Op[ReqT, RepT], handler: Callable[[ReqT], RepT]
    ) -> Callable[[ReqT], RepT]:
        """A control op recorded in the audit stream (manual bans and list changes): the
        actor, the target (ip, pattern) and the other fields the client sent."""
        audit = self.fw.audit
        name = op.name

        def run(req: ReqT) -> RepT:
            args = msgspec.to_builtins(req)
            actor = str(args.get("actor") or "control")
            target = str(args.get("ip", args.get("pattern", args.get("value", ""))))
            details = {k: v for k, v in args.items() if k not in ("actor", "ip")}
            try:
                result = handler(req)
            except ControlError as exc:
                audit.record(name, actor=actor, target=target,
                             outcome=f"refused: {exc.status} {exc}", details=details)  # fmt: skip
                raise
            except Exception as exc:
                audit.record(name, actor=actor, target=target, outcome=f"failed: {exc}",
                             details=details)  # fmt: skip
                raise
            audit.record(name, actor=actor, target=target, outcome="ok", details=details)
            return result

        return run

    def _arg_ip(self, text: str) -> tuple[str, Element]:
        try:
            return text, self.fw.parse_target(text)
        except ValueError:
            raise ControlError(f"invalid IP address: {text}", 400) from None

    def op_status(self, req: Empty) -> FirewallStatus:
        return FirewallStatus(
            blacklistCount=len(self.fw.ledger.active(time.time())),
            whitelistCount=self.fw.lists.whitelist_count(),
        )

    def op_blacklist(self, req: Empty) -> dict[str, BlacklistEntry]:
        """Every active ban in the Go shape; a row that cannot be shown is reported, skipped."""
        out: dict[str, BlacklistEntry] = {}
        for e in self.fw.ledger.active(time.time()):
            try:
                out[e.ip] = e.go_shape()
            except (ValueError, OverflowError, OSError) as exc:
                self.fw.stats.bad_rows += 1
                if self.fw.log_limiter.allow("bad ban row"):
                    log.error("ban list: skipped unreadable ban ip=%s: %s", escape(e.ip, 64), exc)
        return out

    def op_blacklist_get(self, req: IpRequest) -> BlacklistLookup:
        text = req.ip
        try:
            key = str(self.fw.parse_target(text))
        except ValueError:
            return BlacklistLookup(ip=text, blacklisted=False)
        banned = self.fw.ledger.get(key, time.time()) is not None
        return BlacklistLookup(ip=text, blacklisted=banned)

    def op_iptables(self, req: Empty) -> IptablesInfo:
        kernel = self.fw.kernel
        try:
            members = [m for m, _ in kernel.list_members()]
            info = kernel.describe()  # with the ruleset read from the kernel
        except FirewallError as exc:
            what = "ipset" if kernel.kind == "ipset" else f"{kernel.kind} sets"
            raise ControlError(f"failed to list {what}: {exc}", 500) from None
        ruleset = info.get("ruleset")
        return IptablesInfo(
            chain=str(info.get("chain", "")),
            ipset=str(info.get("ipset", "")),
            blockedIps=members,
            count=len(members),
            backend=kernel.kind,  # fsguard's addition; the Go fields above stay
            ruleset=ruleset if isinstance(ruleset, dict) else None,
        )

    def _seconds(self, req: BanRequest) -> float:
        if req.permanent:
            return 0.0
        duration = req.duration
        if isinstance(duration, msgspec.UnsetType):
            return self.fw.config.security.block_duration
        seconds = duration
        if not 0 < seconds <= MAX_BAN_SECONDS:  # also refuses NaN and infinities
            raise ControlError(
                f"invalid duration: {duration!r}: must be positive and at most "
                f"{MAX_BAN_SECONDS} seconds (100 years); use permanent for longer",
                400,
            )
        return seconds

    def op_ban(self, req: BanRequest) -> BanResult:
        """A manual ban. Kernel and store change together or not at all, and a ban never
        shortens an existing one: the longer of the two stays, in both (unban first to
        shorten)."""
        fw = self.fw
        text, elem = self._arg_ip(req.ip)
        why = fw.protect.reason(elem, _client(req))
        if why is not None:
            fw.stats.refused_protected += 1
            raise ControlError(f"cannot blacklist {text}: it is {why}", 400)
        if fw.is_trusted(elem):
            raise ControlError(f"cannot blacklist IP in trusted network: {text}", 400)
        if fw.lists.is_whitelisted(str(elem)):
            raise ControlError(f"cannot blacklist whitelisted IP: {text}", 400)
        seconds = self._seconds(req)
        timeout = kernel_timeout_for(seconds)
        now = time.time()
        expires = now + max(1, math.ceil(seconds)) if timeout else 0.0
        existing = fw.ledger.get(str(elem), now)
        if existing is not None and (
            existing.permanent or (expires != 0 and existing.expires_at >= expires)
        ):
            return BanResult(
                status="success",
                message=f"IP {text} already in blacklist (the longer ban stays)",
                entry=existing.go_shape(),
            )
        entry = BanEntry(
            ip=str(elem), added_at=now, expires_at=expires,
            reason=req.reason, rule="manual",
            decision_id=f"manual-{os.getpid()}-{next(self._manual_seq)}", source="manual",
        )  # fmt: skip
        try:
            fw.ledger.ban_now(Intent(elem, timeout, entry))
        except FirewallError as exc:
            fw.stats.kernel_errors += 1
            raise ControlError(f"firewall error: {exc}", 500) from None
        fw.stats.bans_applied += 1
        log.info(
            "banned ip=%s rule=manual reason=%s duration=%s", elem, escape(entry.reason), timeout
        )
        fw.publish(ListChange(list="blacklist", op="add", ip=entry.ip, expires=entry.expires_at))
        return BanResult(
            status="success", message=f"IP {text} added to blacklist", entry=entry.go_shape()
        )

    def op_unban(self, req: UnbanRequest) -> StatusMessage:
        fw = self.fw
        text, elem = self._arg_ip(req.ip)
        key = str(elem)
        known = fw.ledger.get(key, time.time()) is not None or fw.ledger.is_pending(key)
        if not known and fw.kernel_enabled:
            try:
                known = fw.kernel.contains(elem)  # e.g. banned before a restart
            except FirewallError as exc:
                raise ControlError(f"firewall error: {exc}", 500) from None
        if not known:
            raise ControlError(f"IP {text} not in blacklist", 404)
        try:
            fw.ledger.unban_now(elem)
        except FirewallError as exc:
            fw.stats.kernel_errors += 1
            raise ControlError(f"firewall error: {exc}", 500) from None
        log.info("unbanned ip=%s", elem)
        fw.publish(ListChange(list="blacklist", op="remove", ip=key))
        return StatusMessage(status="success", message=f"IP {text} removed from blacklist")

    def unban_covering(self, ip: str) -> str:
        """Lift the ban covering address `ip` (whitelisting it); the element or ""."""
        elem = self.fw.parse_target(ip)
        try:
            self.op_unban(UnbanRequest(ip=str(elem)))
        except ControlError as exc:
            if exc.status == 404:
                return ""
            raise
        return str(elem)

    def op_stats(self, req: Empty) -> FirewallStats:
        """The ledger's counters; the durable state and the fleet add theirs (process.py)."""
        fw = self.fw
        s = fw.stats
        active = fw.ledger.active(time.time())
        v6 = sum(1 for e in active if ":" in e.ip)
        return FirewallStats(
            decisions_received=s.decisions_received,
            bans_applied=s.bans_applied,
            duplicates=s.duplicates,
            refused_trusted=s.refused_trusted,
            refused_protected=s.refused_protected,
            invalid=s.invalid,
            decode_errors=s.decode_errors,
            batches=s.batches,
            last_batch_seconds=s.last_batch_seconds,
            kernel_errors=s.kernel_errors,
            kernel_full=s.kernel_full,
            pending_bans=len(fw.ledger.pending),
            retries=s.retries,
            expired_pending=s.expired_pending,
            drift_checks=s.drift_checks,
            drift_repaired=s.drift_repaired,
            last_drift=s.last_drift,
            store_errors=s.store_errors,
            store_backlog=len(fw.ledger.backlog),
            recidive_escalations=s.recidive_escalations,
            ban_budget_exceeded=fw.budget.exceeded,
            ban_budget_over=int(fw.budget.over()),
            bans_last_minute=fw.budget.last_minute(),
            max_bans_per_minute=fw.budget.limit,
            bad_ban_rows=s.bad_rows,
            ban_latency_p50=s.percentile(0.50),
            ban_latency_p99=s.percentile(0.99),
            ban_latency_histogram=s.ban_latency.snapshot(),
            ban_stage_histograms={k: h.snapshot() for k, h in s.ban_stages.items()},
            batch_seconds_histogram=s.batch_seconds.snapshot(),
            pid=os.getpid(),
            active_bans=ActiveBans(ipv4=len(active) - v6, ipv6=v6),
        )
