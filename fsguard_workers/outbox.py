"""The worker's link to the firewall beyond the PUSH of decisions.

- Unacknowledged decisions: every BanDecision shipped is kept (bounded, oldest dropped
  and counted) until the firewall's DecisionAck for its id arrives on this worker's
  `worker-<i>.acks` PULL socket (the firewall connects a PUSH). A decision unacked for
  RESEND_AFTER seconds is re-sent; after the firewall announces a (re)start (an ack with
  an empty id) every unacked decision is re-sent at once. The firewall is idempotent on
  decision ids (in memory and in its store), so a re-send never bans twice.
- Whitelist view: PUB/SUB can miss changes (slow joiner, either side restarting), so at
  worker start and on every firewall start the worker asks the firewall for the control
  op `lists_snapshot` (a REQ polled with the worker's other sockets: never blocks the
  shard) and applies it through `engine.on_list_change`, removing entries it knew that
  the snapshot no longer holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
import zmq

from shared import addresses
from shared.control import ControlError, PeerReplyInvalid, decode_answer, encode_call
from shared.messages import DecisionAck, ListChange, decode
from shared.ops.firewall import LISTS_SNAPSHOT
from shared.ops.firewall_state import ListsSnapshot, SnapshotRequest

log = logging.getLogger(__name__)

RESEND_AFTER = 2.0  # seconds without an ack before a decision is re-sent
RESEND_PER_TICK = 5000  # re-sends per tick at most (the shard keeps running)
MAX_UNACKED = 20_000
SNAPSHOT_TIMEOUT = 2.0
SNAPSHOT_RETRY = 1.0
SNAPSHOT_PERIOD = 30.0  # PUB/SUB can drop a change: resynchronise this often anyway


class FirewallLink:
    def __init__(
        self,
        ctx: zmq.Context[Any],
        runtime_dir: str,
        index: int,
        on_list_change: Callable[[ListChange], None],
        poller: zmq.Poller,
        clock: Callable[[], float] = time.monotonic,
        shards: int = 0,
    ) -> None:
        self.ctx = ctx
        self.index = index
        self.shards = shards  # the firewall sends only this shard's bans (0: all)
        self.runtime_dir = runtime_dir
        self.on_list_change = on_list_change
        self.poller = poller
        self.clock = clock
        self.acks = ctx.socket(zmq.PULL)
        self.acks.setsockopt(zmq.LINGER, 0)
        self.acks_endpoint = addresses.worker_acks(runtime_dir, index)
        self.acks.bind(self.acks_endpoint)
        poller.register(self.acks, zmq.POLLIN)
        self.unacked: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # id -> (sent, raw)
        self.known: dict[str, set[str]] = {
            "whitelist": set(), "untrusted": set(), "blacklist": set(),
        }  # fmt: skip
        self._req: zmq.Socket[Any] | None = None
        self._req_deadline = 0.0
        self._snapshot_due: float | None = clock()  # ask at start
        self.acked = 0
        self.nacked = 0
        self.resent = 0
        self.overflow = 0
        self.snapshots = 0
        self.firewall_starts = 0

    # --- decisions -----------------------------------------------------------------------

    def track(self, decision_id: str, raw: bytes) -> None:
        if not decision_id:
            return
        self.unacked[decision_id] = (self.clock(), raw)
        self.unacked.move_to_end(decision_id)
        while len(self.unacked) > MAX_UNACKED:
            self.unacked.popitem(last=False)
            self.overflow += 1

    def _handle_acks(self) -> None:
        while True:
            try:
                raw = self.acks.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if not isinstance(msg, DecisionAck):
                continue
            if not msg.id:  # the firewall (re)started
                self.firewall_starts += 1
                for key, (_, data) in self.unacked.items():
                    self.unacked[key] = (0.0, data)  # due now
                self._snapshot_due = self.clock()
                continue
            if msg.ok:
                if self.unacked.pop(msg.id, None) is not None:
                    self.acked += 1
            else:
                self.nacked += 1  # kept: re-sent on the timer, unless nothing more can come
                if msg.final:
                    self.unacked.pop(msg.id, None)

    def _resend(self, decisions: zmq.Socket[Any], now: float) -> None:
        for _ in range(min(RESEND_PER_TICK, len(self.unacked))):
            key, (sent, raw) = next(iter(self.unacked.items()))
            if sent + RESEND_AFTER > now:
                return
            try:
                decisions.send(raw, zmq.NOBLOCK)
            except zmq.Again:
                return  # the firewall's queue is full: later
            self.unacked[key] = (now, raw)
            self.unacked.move_to_end(key)
            self.resent += 1

    # --- list snapshot ---------------------------------------------------------------------

    def _close_req(self) -> None:
        if self._req is not None:
            self.poller.unregister(self._req)
            self._req.close(0)
            self._req = None

    def _request_snapshot(self, now: float) -> None:
        self._close_req()
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(addresses.firewall_control(self.runtime_dir))
        ask = (
            SnapshotRequest(shard=self.index, shards=self.shards)
            if self.shards
            else SnapshotRequest()  # every ban (a tree without shards: tests)
        )
        req.send(encode_call(LISTS_SNAPSHOT, ask))
        self.poller.register(req, zmq.POLLIN)
        self._req = req
        self._req_deadline = now + SNAPSHOT_TIMEOUT
        self._snapshot_due = None

    def _handle_snapshot_reply(self) -> None:
        assert self._req is not None
        try:
            raw = self._req.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        self._close_req()
        try:
            snapshot = decode_answer(LISTS_SNAPSHOT, "firewall", raw)
        except (ControlError, PeerReplyInvalid):
            self._snapshot_due = self.clock() + SNAPSHOT_RETRY
            return
        self.apply_snapshot(snapshot)
        self._snapshot_due = self.clock() + SNAPSHOT_PERIOD

    def apply_snapshot(self, snapshot: ListsSnapshot) -> None:
        whitelist = dict(snapshot.whitelist)
        # Bans: an unban missed on PUB/SUB must not keep killing the customer's calls.
        # Only bans this worker learned from the firewall are released (its own fresh
        # decisions, not yet applied, are not in `known`).
        blacklist = dict(snapshot.blacklist)
        for ip in self.known["blacklist"] - set(blacklist):
            self.on_list_change(ListChange(list="blacklist", op="remove", ip=ip))
        for ip, expires in blacklist.items():
            self.on_list_change(ListChange(list="blacklist", op="add", ip=ip, expires=expires))
        untrusted = set(snapshot.untrusted)
        for ip in self.known["whitelist"] - set(whitelist):
            self.on_list_change(ListChange(list="whitelist", op="remove", ip=ip))
        for ip, expires in whitelist.items():
            self.on_list_change(ListChange(list="whitelist", op="add", ip=ip, expires=expires))
        for pattern in self.known["untrusted"] - untrusted:
            self.on_list_change(ListChange(list="untrusted", op="remove", ip=pattern))
        for pattern in untrusted - self.known["untrusted"]:
            self.on_list_change(ListChange(list="untrusted", op="add", ip=pattern))
        self.known = {
            "whitelist": set(whitelist), "untrusted": untrusted, "blacklist": set(blacklist),
        }  # fmt: skip
        self.snapshots += 1
        log.debug(
            "lists resynchronised from the firewall: %d whitelisted, %d untrusted patterns, "
            "%d bans", len(whitelist), len(untrusted), len(blacklist),
        )  # fmt: skip

    def observe(self, change: ListChange) -> None:
        """A live ListChange the worker applied (so a later snapshot can diff)."""
        known = self.known.get(change.list)
        if known is None:
            return
        if change.op == "add":
            known.add(change.ip)
        elif change.op == "remove":
            known.discard(change.ip)

    # --- loop hooks ------------------------------------------------------------------------

    def handle(self, ready: dict[Any, int]) -> None:
        if self.acks in ready:
            self._handle_acks()
        if self._req is not None and self._req in ready:
            self._handle_snapshot_reply()

    def tick(self, decisions: zmq.Socket[Any]) -> None:
        now = self.clock()
        if self._req is not None and now >= self._req_deadline:
            self._close_req()  # no answer (firewall down): a fresh REQ later
            self._snapshot_due = now + SNAPSHOT_RETRY
        if self._req is None and self._snapshot_due is not None and now >= self._snapshot_due:
            self._request_snapshot(now)
        if self.unacked:
            self._resend(decisions, now)

    def stats(self) -> dict[str, int]:
        return {
            "decisions_unacked": len(self.unacked),
            "decisions_acked": self.acked,
            "decisions_nacked": self.nacked,
            "decisions_resent": self.resent,
            "decisions_unacked_overflow": self.overflow,
            "list_snapshots": self.snapshots,
            "firewall_starts_seen": self.firewall_starts,
        }

    def close(self) -> None:
        self._close_req()
        self.poller.unregister(self.acks)
        self.acks.close(0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(addresses.ipc_path(self.acks_endpoint))
