"""The firewall's policy over the ban ledger: validate decisions, refuse what must never
be banned, dedupe, escalate repeat offenders, then hand intents to the `BanLedger`
(which owns ids, store, kernel and acks). No sockets here (process.py runs the loop)."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.audit import AuditLog
from shared.config import MAX_BAN_SECONDS, Config
from shared.iputil import NetworkSet, parse_ip
from shared.logs import LogRateLimiter, escape
from shared.messages import BanDecision, ListChange
from shared.recidive import recidive_duration

from .backend import Element, KernelBackend
from .budget import BanBudget
from .control_ops import ControlOps
from .entries import BanEntry, BanStore, MemoryBanStore
from .ledger import BanLedger, Intent, kernel_timeout_for
from .lists import ListOps
from .selfprotect import SelfProtection
from .stats import Stats

if TYPE_CHECKING:
    from .ledger import Ack

log = logging.getLogger("fsguard.firewall")

LOG_SUMMARY_SECONDS = 10.0  # per-ban / per-decision lines: the first few, then a summary
BAN_LINES = 5  # "banned ip=..." lines per LOG_SUMMARY_SECONDS before the summary takes over


class Firewall:
    """Decision handling and control ops, independent of the sockets (see process.py)."""

    def __init__(
        self,
        config: Config,
        kernel: KernelBackend,
        store: BanStore | None = None,
        publish: Callable[[ListChange], None] = lambda change: None,
        audit: AuditLog | None = None,
        ack: Ack | None = None,
    ) -> None:
        self.config = config
        self.audit = audit if audit is not None else AuditLog.null("firewall")
        self.log_limiter = LogRateLimiter(LOG_SUMMARY_SECONDS)
        self._ban_window_end = 0.0
        self._ban_lines = 0
        self._ban_lines_suppressed = 0
        self.kernel = kernel
        self.publish = publish
        self.stats = Stats()
        self.budget = BanBudget(config.security.max_bans_per_minute)
        self.kernel_enabled = config.security.auto_block_enabled
        self.ledger = BanLedger(
            store if store is not None else MemoryBanStore(),
            kernel,
            kernel_enabled=self.kernel_enabled,
            stats=self.stats,
            ack=ack,
        )
        self.trusted = [
            ipaddress.ip_network(c.strip(), strict=False) for c in config.security.trusted_networks
        ]
        self._trusted_set = NetworkSet(config.security.trusted_networks)
        self.protect = SelfProtection(config.security.esl_host)
        self.lists = ListOps(self)  # whitelist and untrusted patterns (lists.py)
        self.control = ControlOps(self)

    @property
    def store(self) -> BanStore:
        return self.ledger.store

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

    def refuse(self, elem: Element) -> bool:
        """Never in a ban set: protected, trusted or whitelisted."""
        return (
            self.protect.reason(elem) is not None
            or self.is_trusted(elem)
            or self.lists.is_whitelisted(str(elem))
        )

    # --- decisions ---------------------------------------------------------------

    def handle_batch(self, decisions: list[BanDecision]) -> None:
        started = time.monotonic()
        now = time.time()
        ledger = self.ledger
        pending: dict[str, Intent] = {}
        for d in ledger.triage(decisions):
            self.stats.decisions_received += 1
            if d.source == "simulated":  # a simulated rule's decision never reaches the kernel
                self.stats.invalid += 1
                ledger.ack_ok(d)
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
                ledger.ack_ok(d)  # final: nothing to retry
                continue
            why = self.protect.reason(elem)
            if why is not None:
                self.stats.refused_protected += 1
                if self.log_limiter.allow("refused protected"):
                    log.warning(
                        "refused to ban protected address ip=%s (%s) rule=%s id=%s",
                        elem, why, escape(d.rule), escape(d.id),
                    )  # fmt: skip
                ledger.ack_ok(d)
                continue
            key = str(elem)
            if self.is_trusted(elem) or self.lists.is_whitelisted(key):
                self.stats.refused_trusted += 1
                if self.log_limiter.allow("refused trusted"):
                    log.warning(
                        "refused to ban trusted address ip=%s rule=%s id=%s",
                        elem, escape(d.rule), escape(d.id),
                    )  # fmt: skip
                ledger.ack_ok(d)
                continue
            timeout = kernel_timeout_for(d.duration)
            # The stored expiry is the real one; bans longer than MAX_TIMEOUT are re-armed.
            expires = now + max(1, math.ceil(d.duration)) if timeout else 0.0
            existing = ledger.get(key, now)
            queued = pending.get(key)
            waiting = ledger.pending_intent(key)
            if (
                (existing is not None and existing.covers(expires))
                or (queued is not None and queued.entry.covers(expires))
                or (waiting is not None and waiting.entry.covers(expires))
            ):
                self.stats.duplicates += 1
                if waiting is not None and (existing is None or not existing.covers(expires)):
                    waiting.decisions.append(d)  # acknowledged when the waiting ban lands
                elif queued is not None and (existing is None or not existing.covers(expires)):
                    queued.decisions.append(d)
                else:
                    ledger.ack_covered(d, key)
                continue
            entry = BanEntry(
                ip=key, added_at=now, expires_at=expires, reason=d.reason, rule=d.rule,
                fail_count=d.evidence_count, decision_id=d.id, source=d.source, user=d.user,
            )  # fmt: skip
            intent = Intent(elem, timeout, entry, [d])
            if queued is not None:
                intent.decisions = [*queued.decisions, d]
            if waiting is not None:
                ledger.replace_pending(intent)
            pending[key] = intent
        if pending:
            self._escalate_repeat_offenders(pending, now)
            with self.audit.batch():
                self._apply(list(pending.values()))
            self.stats.batches += 1
            self.stats.last_batch_seconds = time.monotonic() - started
            self.stats.batch_seconds.observe(self.stats.last_batch_seconds)

    def _escalate_repeat_offenders(self, pending: dict[str, Intent], now: float) -> None:
        """Lengthen rule bans whose address the store saw banned within the recidive window
        more often than the worker remembers (a restarted worker forgets its history)."""
        cfg = self.config.security.recidive
        if not cfg.enabled:
            return
        candidates = [
            key for key, i in pending.items()
            if i.decisions[-1].source == "rule"
            and isinstance(i.decisions[-1].evidence.get("base_duration"), int | float)
        ]  # fmt: skip
        if not candidates:
            return
        counts = self.store.recidive_counts(candidates, now - cfg.window)
        for key, prior in counts.items():
            intent = pending[key]
            d = intent.decisions[-1]
            if prior <= int(d.evidence.get("recidive_prior", 0) or 0) or intent.timeout == 0:
                continue
            duration = recidive_duration(float(d.evidence["base_duration"]), prior, cfg)
            if duration != 0 and duration <= d.duration:
                continue
            intent.timeout = kernel_timeout_for(duration)
            intent.entry.expires_at = now + math.ceil(duration) if intent.timeout else 0.0
            self.stats.recidive_escalations += 1

    def _apply(self, intents: list[Intent]) -> None:
        """Through the ledger (kernel, then store); audit, log and publish what landed."""
        done = self.ledger.apply(intents)
        landed = {i.key for i in done}
        for intent in intents:
            if intent.key not in landed:
                self._audit_ban(intent, intent.decisions[-1], "failed: kernel refused, retrying")
        self.announce(done)

    def announce(self, done: list[Intent]) -> None:
        automatic = sum(1 for intent in done if intent.decisions[-1].source == "rule")
        if automatic:
            self.budget.note(automatic)  # over budget: alert, never stop banning
        now = time.time()
        for intent in done:
            d = intent.decisions[-1]
            self.stats.bans_applied += 1
            if d.event_ts > 0:
                self.stats.latencies.append(now - d.event_ts)
                self.stats.ban_latency.observe(max(0.0, now - d.event_ts))
            self._observe_stages(d, self.ledger.kernel_ts)
            outcome = "ok" if self.kernel_enabled else "recorded (auto_block disabled)"
            self._audit_ban(intent, d, outcome)
            if self._ban_line_allowed():
                log.info(
                    "banned ip=%s rule=%s reason=%s duration=%s evidence=%d id=%s ua=%s%s",
                    intent.elem, escape(d.rule), escape(d.reason),
                    "permanent" if intent.timeout == 0 else f"{intent.timeout}s",
                    d.evidence_count, escape(d.id), escape(d.user_agent),
                    "" if self.kernel_enabled else " (auto_block disabled: not in kernel)",
                )  # fmt: skip
            self.publish(
                ListChange(list="blacklist", op="add", ip=intent.key,
                           expires=intent.entry.expires_at)
            )  # fmt: skip

    def _observe_stages(self, d: BanDecision, kernel_ts: float) -> None:
        """One rule ban's stage latencies; stages with an unknown start are skipped."""
        stages = self.stats.ban_stages
        for stage, start, end in (
            ("freeswitch_to_read", d.fs_ts, d.event_ts),
            ("read_to_decision", d.event_ts, d.decided_ts),
            ("decision_to_kernel", d.decided_ts, kernel_ts),
            ("freeswitch_to_kernel", d.fs_ts, kernel_ts),
        ):
            if start > 0 and end > 0:
                stages[stage].observe(max(0.0, end - start))

    def retry_pending(self) -> None:
        """Re-apply refused bans whose backoff elapsed (called from the loop)."""
        if not self.ledger.pending:
            return
        self.announce(self.ledger.retry_due())

    def _audit_ban(self, intent: Intent, d: BanDecision, outcome: str) -> None:
        self.audit.record(
            "ban",
            actor=f"rule:{d.rule}" if d.source == "rule" else f"{d.source}:{d.rule}",
            target=intent.key,
            outcome=outcome,
            details={
                "reason": d.reason, "duration": intent.timeout,
                "evidence_count": d.evidence_count, "decision_id": d.id, "worker": d.worker,
                "user": d.user, "user_agent": d.user_agent,
            },
        )  # fmt: skip

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
            )  # fmt: skip
            self._ban_lines_suppressed = 0
        for key, count in sorted(self.log_limiter.take_suppressed().items()):
            log.warning(
                "%d more '%s' lines suppressed in the last %.0fs",
                count, key, LOG_SUMMARY_SECONDS,
            )  # fmt: skip

    def sweep(self) -> None:
        self.ledger.expire()
        self.protect.refresh(force=False)

    def unban_covering(self, ip: str) -> str:
        return self.control.unban_covering(ip)
