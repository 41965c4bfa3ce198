"""A worker process: owns one shard of per-IP state and runs the rules on it.

Loop: poll the event PULL socket, the control REP socket and the list SUB socket;
feed every event of a batch to the DetectionEngine; ship its decisions to the
firewall (PUSH) and its call kills to the supervisor (PUSH). Sync zmq + Poller:
one thread, no locks, nothing shared with anyone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
import zmq

from fsguard_workers import reconfigure
from fsguard_workers.engine import DetectionEngine
from fsguard_workers.outbox import FirewallLink
from shared import addresses
from shared.audit import AuditLog
from shared.config import Config, worker_count
from shared.control import ControlError, dispatch
from shared.logs import LogRateLimiter, escape, set_level
from shared.messages import (
    BanDecision,
    ListChange,
    decode,
    encode,
    unpack_event_batch,
)
from shared.ops import worker
from shared.ops.base import OpTable
from shared.ops.common import LogLevel, LogLevelRequest, Ping
from shared.ops.worker import WORKER
from shared.stop import StopFlag

log = logging.getLogger(__name__)

MAX_BATCHES_PER_TURN = 8  # then poll again: control requests (scrapes) wait at most ~8 batches
TICK_INTERVAL = 0.1
LOG_SUMMARY_SECONDS = 10.0
TRIM_INTERVAL = 1.0  # seconds between malloc_trim calls while events flow

# Events counted by name for fsguard_events_total{event}: the Event-Name, or the
# Event-Subclass of a CUSTOM event, found by a bytes search (keys only: inside a JSON
# string a quote is escaped). Labels are bounded: a fixed character set and at most
# EVENT_LABELS_MAX distinct names per worker; anything else counts as "other".
_NAME_KEY = b'"Event-Name":"'
_SUBCLASS_KEY = b'"Event-Subclass":"'
_LABEL_RE = re.compile(rb"[A-Za-z0-9_:]{1,64}")
EVENT_LABELS_MAX = 64


def event_label(body: bytes) -> bytes:
    """`sofia::register_failure`, `CHANNEL_CREATE`, ... (unvalidated: see _handle_batch)."""
    i = body.find(_NAME_KEY)
    if i < 0:
        return b"other"
    start = i + len(_NAME_KEY)
    name = body[start : body.find(b'"', start, start + 65)]
    if name == b"CUSTOM":
        j = body.find(_SUBCLASS_KEY)
        if j >= 0:
            start = j + len(_SUBCLASS_KEY)
            name = body[start : body.find(b'"', start, start + 65)]
    return name


class Worker:
    def __init__(self, config: Config, index: int) -> None:
        self.config = config
        self.index = index
        self.engine = DetectionEngine(config, worker_index=index)
        self.processed = 0
        self.batches = 0
        self.bad_batches = 0
        self.decisions_sent = 0
        self.kills_sent = 0
        self.outbox_dropped = 0
        self.events_by_name: dict[bytes, int] = {}
        self.decisions_by_rule: dict[str, int] = {}
        self.log_limiter = LogRateLimiter(LOG_SUMMARY_SECONDS)
        self.audit = AuditLog.null("worker")  # opened by run()
        self.link: FirewallLink | None = None  # acks, re-sends, list snapshots (outbox.py)
        self.stop = StopFlag.unarmed()  # main() arms SIGTERM/SIGINT

    def table(self) -> OpTable:
        """The worker's control ops (shared/ops/worker.py), one typed handler each."""
        eng = self.engine
        t = OpTable(WORKER)
        t.bind(worker.PING, lambda r: Ping(role="worker", pid=os.getpid(), index=self.index))
        t.bind(worker.LOG_LEVEL, _log_level)
        t.bind(worker.STATS, lambda r: self.stats())
        t.bind(worker.FAILED, lambda r: eng.failed_snapshot())
        t.bind(worker.WRONG_CALL_STATES, lambda r: eng.wrong_call_state_snapshot())
        t.bind(worker.RATE_CALLS, lambda r: eng.rate_snapshot("calls"))
        t.bind(worker.RATE_REGISTRATIONS, lambda r: eng.rate_snapshot("registrations"))
        t.bind(worker.WHITELIST, lambda r: eng.whitelist_snapshot())
        t.bind(worker.SIMULATED, lambda r: eng.simulated_snapshot())
        t.bind(worker.GATEWAYS, self._gateways)
        t.bind(worker.RELOAD, lambda order: reconfigure.apply(self.config, eng, order))
        return t

    def _gateways(self, req: worker.GatewaysRequest) -> worker.GatewaysSet:
        """The supervisor's list of FreeSWITCH gateway addresses (protected sources)."""
        return worker.GatewaysSet(protected=self.engine.set_gateways(req.addresses[:4096]))

    def stats(self) -> worker.WorkerStats:
        """Reply of `stats`: every counter by name, into its WorkerStats field."""
        data: dict[str, object] = dict(self.engine.stats())
        data.update(self.engine.rule_stats())
        data.update(
            index=self.index,
            pid=os.getpid(),
            processed=self.processed,
            batches=self.batches,
            bad_batches=self.bad_batches,
            decisions_sent=self.decisions_sent,
            kills_sent=self.kills_sent,
            outbox_dropped=self.outbox_dropped,
            events_by_name={k.decode(): v for k, v in self.events_by_name.items()},
            decisions_by_rule=dict(self.decisions_by_rule),
        )
        if self.link is not None:
            data.update(self.link.stats())
        return msgspec.convert(data, worker.WorkerStats)

    def run(self) -> int:
        rd = self.config.paths.runtime_dir
        self.audit = AuditLog(self.config, f"worker-{self.index}")
        ctx: zmq.Context[Any] = zmq.Context()
        events = ctx.socket(zmq.PULL)
        events.setsockopt(zmq.RCVHWM, self.config.workers.queue_size)
        events.connect(addresses.worker_events(rd, self.index))
        decisions = ctx.socket(zmq.PUSH)
        decisions.setsockopt(zmq.LINGER, 2000)
        decisions.setsockopt(zmq.SNDTIMEO, 1000)
        decisions.setsockopt(zmq.SNDHWM, 100_000)
        decisions.connect(addresses.firewall_decisions(rd))
        actions = ctx.socket(zmq.PUSH)
        actions.setsockopt(zmq.LINGER, 500)
        actions.connect(addresses.supervisor_actions(rd))
        lists = ctx.socket(zmq.SUB)
        lists.setsockopt(zmq.SUBSCRIBE, b"")
        lists.connect(addresses.firewall_lists(rd))
        control = ctx.socket(zmq.REP)
        control.setsockopt(zmq.LINGER, 0)
        control_endpoint = addresses.worker_control(rd, self.index)
        control.bind(control_endpoint)

        poller = zmq.Poller()
        poller.register(events, zmq.POLLIN)
        poller.register(control, zmq.POLLIN)
        poller.register(lists, zmq.POLLIN)
        self.link = link = FirewallLink(
            ctx, rd, self.index, self.engine.on_list_change, poller,
            shards=worker_count(self.config),
        )  # fmt: skip
        table = self.table()
        if table.missing():  # a declared op nobody answers: 404 to its callers
            log.error("worker control ops without a handler: %s", ", ".join(table.missing()))
        engine = self.engine
        next_tick = time.monotonic() + TICK_INTERVAL
        next_summary = time.monotonic() + LOG_SUMMARY_SECONDS
        trim = malloc_trim()
        trim_mark = (-1, -1)  # (events processed, sources expired) at the last trim
        next_trim = 0.0
        log.info("worker %d ready", self.index)
        try:
            while not self.stop.requested:
                ready = dict(poller.poll(int(TICK_INTERVAL * 1000)))
                if events in ready:
                    for _ in range(MAX_BATCHES_PER_TURN):
                        try:
                            raw = events.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle_batch(raw)
                        if control.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                            # A scrape or an API read waiting: answer it between batches.
                            control.send(dispatch(table, control.recv()))
                    self._flush(decisions, actions)
                if lists in ready:
                    self._handle_lists(lists)
                if control in ready and control.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    control.send(dispatch(table, control.recv()))
                link.handle(ready)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK_INTERVAL
                    engine.tick()
                    self._flush(decisions, actions)
                    link.tick(decisions)
                    mark = (self.processed, engine.expired)
                    if trim is not None and now >= next_trim and trim_mark != mark:
                        next_trim = now + TRIM_INTERVAL
                        trim_mark = mark
                        # ~0.2 ms; batches and compacted tables (also once a flood's
                        # sources expire, with no event flowing) go back to the kernel
                        trim()
                if now >= next_summary:
                    next_summary = now + LOG_SUMMARY_SECONDS
                    self.log_summaries()
        finally:
            self._flush(decisions, actions)
            link.close()
            for sock in (events, actions, lists, control, decisions):
                sock.close()
            ctx.term()
            self.audit.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addresses.ipc_path(control_endpoint))
        log.info("worker %d stopped", self.index)
        return 0

    def _handle_batch(self, raw: bytes) -> None:
        try:
            read_ts, bodies = unpack_event_batch(raw)
        except ValueError:
            self.bad_batches += 1
            return
        handle = self.engine.handle
        counts = self.events_by_name
        for body in bodies:
            label = event_label(body)
            handle(body, read_ts, label)
            n = counts.get(label)
            if n is None:  # a new label: bounded and validated once
                if len(counts) >= EVENT_LABELS_MAX or not _LABEL_RE.fullmatch(label):
                    label = b"other"
                n = counts.get(label, 0)
            counts[label] = n + 1
        self.processed += len(bodies)
        self.batches += 1

    def _handle_lists(self, sock: zmq.Socket[Any]) -> None:
        while True:
            try:
                raw = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if isinstance(msg, ListChange):
                self.engine.on_list_change(msg)
                if self.link is not None:
                    self.link.observe(msg)

    def _flush(self, decisions: zmq.Socket[Any], actions: zmq.Socket[Any]) -> None:
        """Ship engine outputs. Decisions wait up to SNDTIMEO for a saturated firewall
        queue (the connect-side queue also holds them while the firewall restarts);
        call kills never block the shard."""
        for out in self.engine.drain():
            try:
                if isinstance(out, BanDecision) and out.source == "simulated":
                    self._simulated(out)  # never to the firewall, never a kill
                elif isinstance(out, BanDecision):
                    rules = self.decisions_by_rule
                    rules[out.rule] = rules.get(out.rule, 0) + 1
                    raw = encode(out)
                    if self.link is not None:
                        self.link.track(out.id, raw)  # kept until acked; re-sent if not
                    decisions.send(raw)
                    self.decisions_sent += 1
                else:
                    actions.send(encode(out), zmq.NOBLOCK)
                    self.kills_sent += 1
            except zmq.Again:
                self.outbox_dropped += 1
                if self.log_limiter.allow("outbox full"):
                    log.error("dropped %s: peer queue full", type(out).__name__)

    def _simulated(self, d: BanDecision) -> None:
        if self.log_limiter.allow(f"simulated {d.rule}"):
            log.info(
                "simulated ban (not applied) ip=%s rule=%s reason=%s duration=%ss",
                d.ip, escape(d.rule), escape(d.reason), d.duration,
            )  # fmt: skip
        self.audit.record(
            "simulated_ban",
            actor=f"rule:{d.rule}",
            target=d.ip,
            outcome="simulated",
            details={"reason": d.reason, "duration": d.duration, "decision_id": d.id,
                     "user": d.user, "user_agent": d.user_agent},
        )  # fmt: skip

    def log_summaries(self) -> None:
        for key, count in self.log_limiter.take_suppressed().items():
            log.error("%d more '%s' lines suppressed in the last %.0fs",
                      count, key, LOG_SUMMARY_SECONDS)


def _log_level(req: LogLevelRequest) -> LogLevel:
    try:
        set_level(req.level)
    except ValueError as exc:
        raise ControlError(str(exc)) from exc
    return LogLevel(level=req.level.lower())


def malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), which returns the free pages of the C heap to the kernel
    (freed event batches, libzmq buffers, the engine's replaced dict tables): without it
    RSS stays at the heap's high-water mark. None where it does not exist (musl)."""
    try:
        import ctypes

        fn = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    return lambda: fn(0)


def main(config: Config, index: int) -> int:
    worker = Worker(config, index)
    worker.stop = StopFlag()
    return worker.run()
