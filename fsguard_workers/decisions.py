"""The engine's output: one way to turn what a rule found into a decision.

A rule that crosses its threshold builds one `Evidence` (keyword-only: the rule, its
reason, the base duration and what it saw) and hands it to `_decide`, which applies
the rule's mode (ban / simulate / off), the protected-source check for spoofable
events, auto-block, the active-ban guard and recidive, then emits a BanDecision.
Call kills (`_kill`) are emitted by the rules that see a call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from shared.config import SecurityConfig
from shared.logs import LogRateLimiter
from shared.messages import BanDecision, KillCall
from shared.ops.worker import SimulatedDecision
from shared.recidive import recidive_duration

from .events import Kind, freeswitch_time
from .evidence import Evidence
from .keys import SourceKeys
from .rules.modes import BAN, OFF, Modes, Simulations
from .rules.protection import spoofable
from .snapshots import _rfc3339
from .state import IGNORED_USERS
from .tracking import Tracking

log = logging.getLogger(__name__)

_INF = math.inf

EVENT_NAMES = {
    Kind.PRE_REGISTER: "sofia::pre_register",
    Kind.REGISTER_ATTEMPT: "sofia::register_attempt",
    Kind.REGISTER: "sofia::register",
    Kind.REGISTER_FAILURE: "sofia::register_failure",
    Kind.WRONG_CALL_STATE: "sofia::wrong_call_state",
    Kind.CHANNEL_CREATE: "CHANNEL_CREATE",
    Kind.HANGUP: "CHANNEL_HANGUP_COMPLETE",
}

Output = BanDecision | KillCall


class Decisions(Tracking, SourceKeys):
    """Mixin of DetectionEngine (the attributes below are set by the engine)."""

    _sec: SecurityConfig
    _modes: Modes
    _sims: Simulations
    _wallclock: Callable[[], float]
    _worker: int
    _id_prefix: str
    _seq: int
    _out: list[Output]
    _spoofing_by_rule: dict[str, int]
    _spoof_log: LogRateLimiter

    def _decide(self, found: Evidence) -> bool:
        """Emit one decision per crossing: nothing while a ban of the key is active.

        Returns whether the rule acts (the caller kills the call): False when the rule
        is off or simulated; True otherwise, even when no decision is emitted (auto-block
        off, already banned, a protected source behind a spoofable event).
        """
        rule = found.rule
        mode = self._modes[rule]
        if mode == OFF:
            return False
        key, now, kind = found.key, found.now, found.kind
        if spoofable(kind, found.ev):
            why = self._protected(key, now)
            if why:
                self._suspect_spoofing(rule, key, why, kind, found.ua)
                return True
        if mode != BAN:
            self._simulate(found)
            return False
        if not self._sec.auto_block_enabled:
            self._c["suppressed"] += 1
            return True
        rec = self._bans.get(key)
        if rec is not None and rec.until > now:
            return True
        prior = 0
        if rec is None:
            rec = self._new_ban_record(key)
        else:
            # a repeat offence counts within the recidive window after the last release
            if self._recidive.enabled and now - max(rec.last, rec.until) < self._recidive.window:
                prior = rec.count
            self._bans.move_to_end(key)
        base_duration = found.duration
        duration = recidive_duration(base_duration, prior, self._recidive)
        rec.count = prior + 1
        rec.last = now
        rec.until = _INF if duration <= 0 else now + duration
        self._forget(key)  # counting starts afresh, as in the Go program
        self._learned.pop(key, None)  # a banned source loses its learned exemption
        ua = found.ua
        details: dict[str, Any] = {
            "events": [EVENT_NAMES.get(kind, "")],
            "count": found.count,
            "user_agents": [ua] if ua else [],
        }
        if found.details:
            details.update(found.details)
        if prior:
            details["recidive"] = prior + 1
        # The firewall re-checks with its durable history (a restarted worker forgets).
        details["base_duration"] = base_duration
        details["recidive_prior"] = prior
        self._out.append(self._decision(found, duration, details, "rule"))
        self._c["decisions"] += 1
        return True

    def _decision(
        self, found: Evidence, duration: float, details: dict[str, Any], source: str
    ) -> BanDecision:
        """A real ban (source "rule") carries the ban stage timestamps (FreeSWITCH's event
        time, decided now); a simulated one does not."""
        staged = source == "rule"
        self._seq += 1
        return BanDecision(
            id=f"{self._id_prefix}{self._seq}",
            ip=self._key_text(found.key),
            rule=found.rule,
            reason=found.reason,
            duration=duration,
            user=found.user if found.user not in IGNORED_USERS else "",
            user_agent=found.ua,
            evidence_count=found.count,
            evidence=details,
            source=source,
            event_ts=found.read_ts,
            fs_ts=freeswitch_time(found.ev) if staged else 0.0,
            decided_ts=self._wallclock() if staged else 0.0,
            worker=self._worker,
        )

    def _protected(self, key: int, now: float) -> str:
        why = self._protection.why(key, now)
        if why:
            return why
        until = self._manual.get(key)
        return "whitelist" if until is not None and until > now else ""

    def _suspect_spoofing(self, rule: str, key: int, why: str, kind: Kind, ua: str) -> None:
        """A single unauthenticated event against a protected source: counted and logged."""
        self._c["spoofing_suspected"] += 1
        by_rule = self._spoofing_by_rule
        by_rule[rule] = by_rule.get(rule, 0) + 1
        if self._spoof_log.allow(rule):
            log.warning(
                "suspected spoofing: %s on %s from protected source %s (%s): not banned",
                rule, EVENT_NAMES.get(kind, ""), self._key_text(key), why,
            )  # fmt: skip

    def _simulate(self, found: Evidence) -> None:
        """A simulated rule's decision: recorded and emitted as source="simulated" (the
        worker logs and audits it, never sends it to the firewall)."""
        key, rule, now, duration = found.key, found.rule, found.now, found.duration
        sims = self._sims
        if sims.active(key, rule, now):
            return
        until = _INF if duration <= 0 else now + duration
        details = {"events": [EVENT_NAMES.get(found.kind, "")], "simulated": True}
        decision = self._decision(found, duration, details, "simulated")
        sims.record(key, rule, until, SimulatedDecision(
            ip=decision.ip, rule=rule, reason=found.reason, duration=duration,
            user=decision.user, userAgent=found.ua, count=found.count,
            time=_rfc3339(self._wallclock()), simulated=True,
        ))  # fmt: skip
        self._c["simulated"] += 1
        self._out.append(decision)

    def _kill(self, uuid: str, reason: str) -> None:
        if uuid:
            self._out.append(KillCall(uuid=uuid, reason=reason))
            self._c["kills"] += 1
