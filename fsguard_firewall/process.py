"""The firewall process: single writer of kernel state.

PULL ban decisions -> validate, refuse trusted, dedupe -> batch -> one kernel apply
-> record in the ban store -> PUB list changes. A REP socket answers control ops.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import itertools
import logging
import math
import os
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

import msgspec
import zmq

from shared import addresses, sdnotify
from shared.audit import AuditLog
from shared.config import MAX_BAN_SECONDS, Config
from shared.control import ControlError, Handler, PeerUnavailable, dispatch, request
from shared.iputil import NetworkSet, parse_ip
from shared.logs import LogRateLimiter, escape
from shared.messages import BanDecision, ListChange, decode, encode
from shared.recidive import recidive_duration

from .kernel import MAX_TIMEOUT, Element, FirewallError, KernelFirewall
from .lists import GO_ZERO_TIME, ListOps
from .store import StoreError

log = logging.getLogger("fsguard.firewall")

BATCH_MAX = 1000
BATCH_IDLE_MS = 1  # a batch closes when no decision arrived for this long
POLL_MS = 100  # main loop wake-up (signal latency, expiry sweep)
SWEEP_SECONDS = 5.0
SEEN_IDS_MAX = 100_000
LATENCY_SAMPLES = 10_000
# Prometheus histogram buckets (seconds) of fsguard_ban_latency_seconds (threshold event
# read from ESL -> kernel entry written) and fsguard_firewall_batch_seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LOG_SUMMARY_SECONDS = 10.0  # per-ban / per-decision lines: the first few, then a summary
BAN_LINES = 5  # "banned ip=..." lines per LOG_SUMMARY_SECONDS before the summary takes over


class Histogram:
    """Fixed-bucket counts (O(log b) per observation), exported cumulatively."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above the largest bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict[str, Any]:
        """{"buckets": [[le, cumulative count], ...], "sum", "count"} (+Inf is "count")."""
        cumulative, total = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            cumulative.append([bound, total])
        return {"buckets": cumulative, "sum": self.sum, "count": total + self.counts[-1]}


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class BanEntry(msgspec.Struct, kw_only=True):
    """One active ban. `ip` is the kernel element text (an address or an IPv6 prefix)."""

    ip: str
    added_at: float
    expires_at: float  # 0 = permanent
    reason: str
    rule: str = ""
    fail_count: int = 0
    decision_id: str = ""
    source: str = "rule"
    user: str = ""  # SIP user of the decision (chanDaemon fromUser)

    @property
    def permanent(self) -> bool:
        return self.expires_at == 0

    def active(self, now: float) -> bool:
        return self.expires_at == 0 or self.expires_at > now

    def covers(self, expires_at: float) -> bool:
        """Whether a new ban until `expires_at` (0 = forever) adds nothing to this one.

        An active ban is never re-applied, except to upgrade it to permanent.
        """
        return self.permanent or expires_at != 0

    def go_shape(self) -> dict[str, Any]:
        """The Go program's blacklist entry (camelCase, RFC 3339)."""
        return {
            "ip": self.ip,
            "addedAt": rfc3339(self.added_at),
            "expiresAt": rfc3339(self.expires_at) if self.expires_at else GO_ZERO_TIME,
            "reason": self.reason,
            "failCount": self.fail_count,
            "permanent": self.permanent,
        }


class BanStore(Protocol):
    """Where bans live. MemoryBanStore now; a SQLite store implements the same methods."""

    def get(self, ip: str, now: float) -> BanEntry | None: ...
    def put_many(self, entries: Iterable[BanEntry]) -> None: ...
    def remove(self, ip: str) -> BanEntry | None: ...
    def active(self, now: float) -> list[BanEntry]: ...
    def purge_expired(self, now: float) -> int: ...
    def recidive_counts(self, keys: Sequence[str], since: float) -> dict[str, int]: ...


class MemoryBanStore:
    def __init__(self) -> None:
        self._entries: dict[str, BanEntry] = {}

    def recidive_counts(self, keys: Sequence[str], since: float) -> dict[str, int]:
        return {}  # no durable history: the workers' own recidive count stands

    def get(self, ip: str, now: float) -> BanEntry | None:
        entry = self._entries.get(ip)
        return entry if entry is not None and entry.active(now) else None

    def put_many(self, entries: Iterable[BanEntry]) -> None:
        for entry in entries:
            self._entries[entry.ip] = entry

    def remove(self, ip: str) -> BanEntry | None:
        return self._entries.pop(ip, None)

    def active(self, now: float) -> list[BanEntry]:
        return [e for e in self._entries.values() if e.active(now)]

    def purge_expired(self, now: float) -> int:
        dead = [ip for ip, e in self._entries.items() if not e.active(now)]
        for ip in dead:
            del self._entries[ip]
        return len(dead)


class Stats:
    def __init__(self) -> None:
        self.decisions_received = 0
        self.bans_applied = 0
        self.duplicates = 0
        self.refused_trusted = 0
        self.invalid = 0
        self.decode_errors = 0
        self.batches = 0
        self.last_batch_seconds = 0.0
        self.kernel_errors = 0
        self.recidive_escalations = 0
        self.bad_rows = 0  # stored bans skipped by the ban list (cannot be shown)
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.ban_latency = Histogram(LATENCY_BUCKETS)
        self.batch_seconds = Histogram(BATCH_BUCKETS)

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        data = sorted(self.latencies)
        return data[min(len(data) - 1, math.ceil(q * len(data)) - 1)]


class Firewall:
    """Decision handling and control ops, independent of the sockets (see `main`)."""

    def __init__(
        self,
        config: Config,
        kernel: KernelFirewall,
        store: BanStore | None = None,
        publish: Callable[[ListChange], None] = lambda change: None,
        audit: AuditLog | None = None,
    ) -> None:
        self.config = config
        self.audit = audit if audit is not None else AuditLog.null("firewall")
        self.log_limiter = LogRateLimiter(LOG_SUMMARY_SECONDS)
        self._ban_window_end = 0.0
        self._ban_lines = 0
        self._ban_lines_suppressed = 0
        self.kernel = kernel
        self.store: BanStore = store if store is not None else MemoryBanStore()
        self.publish = publish
        self.stats = Stats()
        self.kernel_enabled = config.security.auto_block_enabled
        self.trusted = [
            ipaddress.ip_network(c.strip(), strict=False) for c in config.security.trusted_networks
        ]
        self._trusted_set = NetworkSet(config.security.trusted_networks)
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._manual_seq = itertools.count(1)
        self.lists = ListOps(self)  # whitelist and untrusted patterns (lists.py)

    # --- validation --------------------------------------------------------------

    def parse_target(self, text: str) -> Element:
        """Kernel element for an address or IPv6 prefix string. Raises ValueError."""
        if "/" in text:
            if len(text) > 49 or "%" in text:
                raise ValueError(f"invalid IP address: {text!r}")
            net = ipaddress.ip_network(text, strict=False)
            if isinstance(net, ipaddress.IPv4Network) and net.prefixlen != 32:
                raise ValueError(f"IPv4 prefixes are not banned: {text!r}")
            return self.kernel.element(net)
        return self.kernel.element(parse_ip(text))

    def is_trusted(self, elem: Element) -> bool:
        """Whether the element (after aggregation) touches any trusted network."""
        if isinstance(elem, ipaddress.IPv6Network):
            return any(elem.version == t.version and elem.overlaps(t) for t in self.trusted)
        return self._trusted_set.contains(elem)

    def _remember_id(self, decision_id: str) -> bool:
        """False when this decision id was already handled."""
        if decision_id in self._seen_ids:
            return False
        self._seen_ids[decision_id] = None
        if len(self._seen_ids) > SEEN_IDS_MAX:
            self._seen_ids.popitem(last=False)
        return True

    # --- decisions ---------------------------------------------------------------

    def handle_batch(self, decisions: list[BanDecision]) -> None:
        started = time.monotonic()
        now = time.time()
        pending: dict[str, tuple[Element, int, BanEntry, BanDecision]] = {}
        for d in decisions:
            self.stats.decisions_received += 1
            if d.id and not self._remember_id(d.id):
                self.stats.duplicates += 1
                continue
            try:
                elem = self.parse_target(d.ip)
                if not 0 <= d.duration <= MAX_BAN_SECONDS:  # also refuses NaN
                    raise ValueError(f"invalid duration {d.duration!r}")
            except ValueError:
                self.stats.invalid += 1
                if self.log_limiter.allow("invalid decision"):
                    log.warning(
                        "invalid ban decision id=%s ip=%s", escape(d.id), escape(d.ip, 64)
                    )
                continue
            if self.is_trusted(elem) or self.lists.is_whitelisted(str(elem)):
                self.stats.refused_trusted += 1
                if self.log_limiter.allow("refused trusted"):
                    log.warning(
                        "refused to ban trusted address ip=%s rule=%s id=%s",
                        elem,
                        escape(d.rule),
                        escape(d.id),
                    )
                continue
            key = str(elem)
            timeout = 0 if d.duration == 0 else min(MAX_TIMEOUT, max(1, math.ceil(d.duration)))
            # The stored expiry is the real one; bans longer than MAX_TIMEOUT are re-armed.
            expires = now + max(1, math.ceil(d.duration)) if timeout else 0.0
            existing = self.store.get(key, now)
            queued = pending.get(key)
            if (existing is not None and existing.covers(expires)) or (
                queued is not None and queued[2].covers(expires)
            ):
                self.stats.duplicates += 1
                continue
            entry = BanEntry(
                ip=key,
                added_at=now,
                expires_at=expires,
                reason=d.reason,
                rule=d.rule,
                fail_count=d.evidence_count,
                decision_id=d.id,
                source=d.source,
                user=d.user,
            )
            pending[key] = (elem, timeout, entry, d)
        if pending:
            self._escalate_repeat_offenders(pending, now)
            with self.audit.batch():
                self._apply(list(pending.values()))
            self.stats.batches += 1
            self.stats.last_batch_seconds = time.monotonic() - started
            self.stats.batch_seconds.observe(self.stats.last_batch_seconds)

    def _escalate_repeat_offenders(
        self, pending: dict[str, tuple[Element, int, BanEntry, BanDecision]], now: float
    ) -> None:
        """Lengthen rule bans whose address the store saw banned within the recidive window
        more often than the worker remembers (a restarted worker forgets its history)."""
        cfg = self.config.security.recidive
        if not cfg.enabled:
            return
        candidates = [
            key for key, (_, _, _, d) in pending.items()
            if d.source == "rule" and isinstance(d.evidence.get("base_duration"), int | float)
        ]
        if not candidates:
            return
        counts = self.store.recidive_counts(candidates, now - cfg.window)
        for key, prior in counts.items():
            elem, timeout, entry, d = pending[key]
            if prior <= int(d.evidence.get("recidive_prior", 0) or 0) or timeout == 0:
                continue
            duration = recidive_duration(float(d.evidence["base_duration"]), prior, cfg)
            if duration != 0 and duration <= d.duration:
                continue
            timeout = 0 if duration == 0 else min(MAX_TIMEOUT, max(1, math.ceil(duration)))
            entry.expires_at = now + math.ceil(duration) if timeout else 0.0
            pending[key] = (elem, timeout, entry, d)
            self.stats.recidive_escalations += 1

    def _apply(self, items: list[tuple[Element, int, BanEntry, BanDecision]]) -> None:
        """Kernel and store for one batch. The store commits while `ipset restore` runs
        (store first is also the crash-safe order: reconcile re-adds what the store has);
        entries the kernel then refused are taken out of the store again."""
        failed: set[str] = set()
        kernel_error: FirewallError | None = None
        pending = None
        if self.kernel_enabled:
            try:
                pending = self.kernel.apply_async(
                    [(elem, timeout) for elem, timeout, _, _ in items]
                )
            except FirewallError as exc:
                kernel_error = exc
                failed = {str(i[0]) for i in items}
        self.store.put_many(entry for elem, _, entry, _ in items if str(elem) not in failed)
        if pending is not None:
            try:
                pending.wait()
            except FirewallError as exc:
                kernel_error = exc
                failed = {elem for elem, _ in exc.failed} or {str(i[0]) for i in items}
                for key in failed:
                    self.store.remove(key)
        if kernel_error is not None:
            self.stats.kernel_errors += 1
            log.error(
                "kernel apply failed for %d of %d bans: %s", len(failed), len(items), kernel_error
            )
        done = [item for item in items if str(item[0]) not in failed] if failed else items
        for elem, timeout, _, d in items if failed else ():
            if str(elem) in failed:
                self._audit_ban(elem, timeout, d, "failed: kernel error")
                if d.id:
                    self._seen_ids.pop(d.id, None)  # a resend may retry it
        now = time.time()
        for elem, timeout, entry, d in done:
            self.stats.bans_applied += 1
            if d.event_ts > 0:
                self.stats.latencies.append(now - d.event_ts)
                self.stats.ban_latency.observe(max(0.0, now - d.event_ts))
            outcome = "ok" if self.kernel_enabled else "recorded (auto_block disabled)"
            self._audit_ban(elem, timeout, d, outcome)
            # The first BAN_LINES per LOG_SUMMARY_SECONDS; the rest go into a summary line.
            if self._ban_line_allowed():
                log.info(
                    "banned ip=%s rule=%s reason=%s duration=%s evidence=%d id=%s ua=%s%s",
                    elem,
                    escape(d.rule),
                    escape(d.reason),
                    "permanent" if timeout == 0 else f"{timeout}s",
                    d.evidence_count,
                    escape(d.id),
                    escape(d.user_agent),
                    "" if self.kernel_enabled else " (auto_block disabled: not in kernel)",
                )
            self.publish(
                ListChange(list="blacklist", op="add", ip=entry.ip, expires=entry.expires_at)
            )

    def _audit_ban(self, elem: Element, timeout: int, d: BanDecision, outcome: str) -> None:
        self.audit.record(
            "ban",
            actor=f"rule:{d.rule}" if d.source == "rule" else f"{d.source}:{d.rule}",
            target=str(elem),
            outcome=outcome,
            details={
                "reason": d.reason,
                "duration": timeout,
                "evidence_count": d.evidence_count,
                "decision_id": d.id,
                "worker": d.worker,
                "user": d.user,
                "user_agent": d.user_agent,
            },
        )

    def _ban_line_allowed(self) -> bool:
        """The first BAN_LINES "banned" lines per LOG_SUMMARY_SECONDS; the rest are
        counted for one summary line (a counter, not a limiter lookup per ban)."""
        now = time.monotonic()
        if now >= self._ban_window_end:
            self._ban_window_end = now + LOG_SUMMARY_SECONDS
            self._ban_lines = 0
        self._ban_lines += 1
        if self._ban_lines <= BAN_LINES:
            return True
        self._ban_lines_suppressed += 1
        return False

    def log_summaries(self) -> None:
        """Summary lines for what the rate limiter held back since the last call."""
        if self._ban_lines_suppressed:
            log.info(
                "banned %d more addresses in the last %.0fs",
                self._ban_lines_suppressed, LOG_SUMMARY_SECONDS,
            )
            self._ban_lines_suppressed = 0
        for key, count in sorted(self.log_limiter.take_suppressed().items()):
            log.warning(
                "%d more '%s' lines suppressed in the last %.0fs",
                count, key, LOG_SUMMARY_SECONDS,
            )

    def _audited(self, op: str, handler: Handler) -> Handler:
        """A control op recorded in the audit stream (manual bans and list changes)."""

        def run(args: dict[str, Any]) -> Any:
            actor = str(args.get("actor") or "control")
            target = str(args.get("ip", args.get("pattern", args.get("value", ""))))
            details = {k: v for k, v in args.items() if k not in ("actor", "ip")}
            try:
                result = handler(args)
            except ControlError as exc:
                outcome = f"refused: {exc.status} {exc}"
                self.audit.record(op, actor=actor, target=target, outcome=outcome,
                                  details=details)
                raise
            except Exception as exc:
                self.audit.record(op, actor=actor, target=target, outcome=f"failed: {exc}",
                                  details=details)
                raise
            self.audit.record(op, actor=actor, target=target, outcome="ok", details=details)
            return result

        return run

    def sweep(self) -> None:
        self.store.purge_expired(time.time())

    # --- control ops -------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        ops: dict[str, Handler] = {
            "ping": lambda args: {"role": "firewall", "pid": os.getpid()},
            "status": self.op_status,
            "blacklist": self.op_blacklist,
            "blacklist_get": self.op_blacklist_get,
            "iptables": self.op_iptables,
            "ban": self.op_ban,
            "unban": self.op_unban,
            "stats": self.op_stats,
            **self.lists.handlers(),
        }
        for op in [o for o in ops if o in ("ban", "unban") or o.endswith(("_add", "_remove"))]:
            ops[op] = self._audited(op, ops[op])
        return ops

    def _arg_ip(self, args: dict[str, Any]) -> tuple[str, Element]:
        raw = args.get("ip")
        text = raw if isinstance(raw, str) else str(raw)
        try:
            return text, self.parse_target(text)
        except ValueError:
            raise ControlError(f"invalid IP address: {text}", 400) from None

    def op_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "blacklistCount": len(self.store.active(time.time())),
            "whitelistCount": self.lists.whitelist_count(),
        }

    def op_blacklist(self, args: dict[str, Any]) -> dict[str, Any]:
        """Every active ban in the Go shape; a row that cannot be shown is reported, skipped."""
        out: dict[str, Any] = {}
        for e in self.store.active(time.time()):
            try:
                out[e.ip] = e.go_shape()
            except (ValueError, OverflowError, OSError) as exc:
                self.stats.bad_rows += 1
                if self.log_limiter.allow("bad ban row"):
                    log.error("ban list: skipped unreadable ban ip=%s: %s", escape(e.ip, 64), exc)
        return out

    def op_blacklist_get(self, args: dict[str, Any]) -> dict[str, Any]:
        raw = args.get("ip")
        text = raw if isinstance(raw, str) else str(raw)
        try:
            key = str(self.parse_target(text))
        except ValueError:
            return {"ip": text, "blacklisted": False}
        return {"ip": text, "blacklisted": self.store.get(key, time.time()) is not None}

    def op_iptables(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            members = [m for m, _ in self.kernel.list_members()]
        except FirewallError as exc:
            raise ControlError(f"failed to list ipset: {exc}", 500) from None
        return {
            "chain": self.kernel.chain,
            "ipset": self.kernel.set_v4,
            "blockedIps": members,
            "count": len(members),
        }

    def op_ban(self, args: dict[str, Any]) -> dict[str, Any]:
        text, elem = self._arg_ip(args)
        if self.is_trusted(elem):
            raise ControlError(f"cannot blacklist IP in trusted network: {text}", 400)
        if self.lists.is_whitelisted(str(elem)):
            raise ControlError(f"cannot blacklist whitelisted IP: {text}", 400)
        permanent = bool(args.get("permanent", False))
        duration = args.get("duration")
        if permanent:
            seconds = 0.0
        elif duration is None:
            seconds = self.config.security.block_duration
        else:
            try:
                seconds = float(duration)
            except (TypeError, ValueError):
                raise ControlError(f"invalid duration: {duration!r}", 400) from None
            if not 0 < seconds <= MAX_BAN_SECONDS:  # also refuses NaN and infinities
                raise ControlError(
                    f"invalid duration: {duration!r}: must be positive and at most "
                    f"{MAX_BAN_SECONDS} seconds (100 years); use permanent for longer",
                    400,
                )
        timeout = 0 if seconds == 0 else min(MAX_TIMEOUT, max(1, math.ceil(seconds)))
        now = time.time()
        entry = BanEntry(
            ip=str(elem),
            added_at=now,
            expires_at=now + max(1, math.ceil(seconds)) if timeout else 0.0,
            reason=str(args.get("reason", "")),
            rule="manual",
            decision_id=f"manual-{os.getpid()}-{next(self._manual_seq)}",
            source="manual",
        )
        if self.kernel_enabled:
            try:
                self.kernel.apply([(elem, timeout)])
            except FirewallError as exc:
                self.stats.kernel_errors += 1
                raise ControlError(f"firewall error: {exc}", 500) from None
        self.store.put_many([entry])
        self.stats.bans_applied += 1
        log.info(
            "banned ip=%s rule=manual reason=%s duration=%s", elem, escape(entry.reason), timeout
        )
        self.publish(ListChange(list="blacklist", op="add", ip=entry.ip, expires=entry.expires_at))
        return {
            "status": "success",
            "message": f"IP {text} added to blacklist",
            "entry": entry.go_shape(),
        }

    def op_unban(self, args: dict[str, Any]) -> dict[str, Any]:
        text, elem = self._arg_ip(args)
        key = str(elem)
        known = self.store.get(key, time.time()) is not None
        if not known and self.kernel_enabled:
            try:
                known = self.kernel.contains(elem)  # e.g. banned before a restart
            except FirewallError as exc:
                raise ControlError(f"firewall error: {exc}", 500) from None
        if not known:
            raise ControlError(f"IP {text} not in blacklist", 404)
        if self.kernel_enabled:
            try:
                self.kernel.apply([], unbans=[elem])
            except FirewallError as exc:
                self.stats.kernel_errors += 1
                raise ControlError(f"firewall error: {exc}", 500) from None
        self.store.remove(key)
        log.info("unbanned ip=%s", elem)
        self.publish(ListChange(list="blacklist", op="remove", ip=key))
        return {"status": "success", "message": f"IP {text} removed from blacklist"}

    def unban_covering(self, ip: str) -> str:
        """Lift the ban covering address `ip` (whitelisting it); the element or ""."""
        elem = self.parse_target(ip)
        try:
            self.op_unban({"ip": str(elem)})
        except ControlError as exc:
            if exc.status == 404:
                return ""
            raise
        return str(elem)

    def op_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        s = self.stats
        active = self.store.active(time.time())
        v6 = sum(1 for e in active if ":" in e.ip)
        return {
            "decisions_received": s.decisions_received,
            "bans_applied": s.bans_applied,
            "duplicates": s.duplicates,
            "refused_trusted": s.refused_trusted,
            "invalid": s.invalid,
            "decode_errors": s.decode_errors,
            "batches": s.batches,
            "last_batch_seconds": s.last_batch_seconds,
            "kernel_errors": s.kernel_errors,
            "recidive_escalations": s.recidive_escalations,
            "bad_ban_rows": s.bad_rows,
            "ban_latency_p50": s.percentile(0.50),
            "ban_latency_p99": s.percentile(0.99),
            "ban_latency_histogram": s.ban_latency.snapshot(),
            "batch_seconds_histogram": s.batch_seconds.snapshot(),
            "pid": os.getpid(),
            "active_bans": {"ipv4": len(active) - v6, "ipv6": v6},
        }

    def restore_from_kernel(self, members: list[tuple[str, int]]) -> None:
        """Record what the kernel already holds (we never flush), so dedupe sees it."""
        now = time.time()
        entries = [
            BanEntry(
                ip=member,
                added_at=now,
                expires_at=now + remaining if remaining else 0.0,
                reason="present in kernel at start",
                source="kernel",
            )
            for member, remaining in members
        ]
        self.store.put_many(entries)


# --- process main loop ---------------------------------------------------------------


def _receive_batch(pull: zmq.Socket[bytes], fw: Firewall) -> list[BanDecision]:
    """Drain up to BATCH_MAX decisions, waiting at most BATCH_IDLE_MS for each next one."""
    batch: list[BanDecision] = []
    while len(batch) < BATCH_MAX:
        try:
            raw = pull.recv(zmq.NOBLOCK)
        except zmq.Again:
            if not pull.poll(BATCH_IDLE_MS, zmq.POLLIN):
                break
            continue
        try:
            msg = decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            fw.stats.decode_errors += 1
            if fw.log_limiter.allow("undecodable decision"):
                log.warning("undecodable decision (%d bytes): %s", len(raw), exc)
            continue
        if not isinstance(msg, BanDecision):
            fw.stats.decode_errors += 1
            log.warning("unexpected message on decisions socket: %s", type(msg).__name__)
            continue
        batch.append(msg)
    return batch


def make_kernel(config: Config) -> KernelFirewall:
    sec = config.security
    return KernelFirewall(
        sec.ipset_name,
        sec.iptables_chain,
        default_timeout=max(0, math.ceil(sec.block_duration)),
        dry_run=sec.dry_run,
        ipv6_prefix=sec.ipv6_ban_prefix,
    )


def _prepare_runtime_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o750, exist_ok=True)
        os.chmod(path, 0o750)


def _already_running(control: str) -> bool:
    """A live peer on our control socket (binding an ipc path would silently steal it)."""
    if not os.path.exists(addresses.ipc_path(control)):
        return False
    try:
        return request(control, "ping", timeout=0.5).ok
    except PeerUnavailable:
        return False


def main(config: Config) -> int:
    """Run the firewall process until SIGTERM/SIGINT. Returns the exit status."""
    runtime = config.paths.runtime_dir
    _prepare_runtime_dir(runtime)
    kernel = make_kernel(config)
    if config.security.auto_block_enabled:
        try:
            kernel.ensure_setup()
        except FirewallError as exc:
            log.error("firewall setup failed: %s", exc)
            return 1
    else:
        log.warning("auto_block_enabled is false: bans are recorded, the kernel is not touched")

    endpoints = {
        "decisions": addresses.firewall_decisions(runtime),
        "lists": addresses.firewall_lists(runtime),
        "control": addresses.firewall_control(runtime),
    }
    if _already_running(endpoints["control"]):
        log.error("another firewall answers on %s: not starting a second writer", runtime)
        return 1
    from .durable import EX_CONFIG, Durable  # imported here: durable imports this module

    try:
        durable = Durable.open(config)
    except StoreError as exc:  # never a silent fresh start
        log.error("state store unusable: %s", exc)
        return 1 if "in use by another process" in str(exc) else EX_CONFIG
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pub = ctx.socket(zmq.PUB)
    rep = ctx.socket(zmq.REP)
    for sock in (pull, pub, rep):
        sock.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.RCVHWM, 100_000)
    old_umask = os.umask(0o007)  # group (the API's) may connect; others may not
    try:
        pull.bind(endpoints["decisions"])
        pub.bind(endpoints["lists"])
        rep.bind(endpoints["control"])
    finally:
        os.umask(old_umask)

    audit = AuditLog(config, "firewall")
    fw = Firewall(
        config,
        kernel,
        store=durable.bans,
        publish=lambda change: pub.send(encode(change)),
        audit=audit,
    )
    durable.attach(fw, ctx)
    if config.security.auto_block_enabled:
        try:
            durable.reconcile()  # store -> kernel and back; migrates sets; never flushes
        except FirewallError as exc:
            log.error("firewall reconcile failed: %s", exc)
    if durable.acks is not None:
        durable.acks.hello()

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    handlers = durable.extend(fw.handlers())
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(rep, zmq.POLLIN)
    log.info("firewall ready (pid %d, dry_run=%s)", os.getpid(), kernel.dry_run)
    sdnotify.ready()
    next_sweep = time.monotonic() + SWEEP_SECONDS
    next_summary = time.monotonic() + LOG_SUMMARY_SECONDS
    status = 0
    try:
        while not stopping:
            events = dict(poller.poll(POLL_MS))
            if rep in events:
                rep.send(dispatch(handlers, rep.recv()))
            if pull in events:
                batch = _receive_batch(pull, fw)
                if batch:
                    fw.handle_batch(durable.before_batch(batch))
                    durable.after_batch(batch)  # DecisionAck, after the commit
            if time.monotonic() >= next_sweep:
                fw.sweep()
                next_sweep = time.monotonic() + SWEEP_SECONDS
                durable.tick()
            if time.monotonic() >= next_summary:
                fw.log_summaries()
                next_summary = time.monotonic() + LOG_SUMMARY_SECONDS
    except StoreError as exc:
        log.error("state store failed, stopping (nothing unacknowledged is lost): %s", exc)
        status = 1
    finally:
        fw.log_summaries()
        audit.close()
        durable.close()
        for sock in (pull, pub, rep):
            sock.close(0)
        ctx.term()
        for endpoint in endpoints.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addresses.ipc_path(endpoint))
        log.info("firewall stopped")
    return status
