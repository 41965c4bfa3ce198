"""The fleet connector process: CrowdSec LAPI ⇄ firewall (issue 16).

All HTTP happens here, never in the firewall's loop. The firewall stays the single
writer: this process asks it over its control socket, like the API does.

- push (watcher credentials): take the oldest outbox items (`crowdsec_outbox_due`),
  POST consecutive alerts as one batch, DELETE for local unbans, then settle. A LAPI
  that is down or answers 5xx/401/garbage keeps the items; retries back off 0.5 s → 10 s.
  A 4xx refusal of an alert is logged and dropped (it can never succeed).
- pull (bouncer key): GET /v1/decisions/stream (startup=true first, and again whenever
  an answer could not be applied), then `crowdsec_apply` every poll_interval, also when
  nothing changed: the firewall records the sync time for the lag metric.
"""

from __future__ import annotations

import logging
import time

import msgspec

from shared import addresses, sdnotify
from shared.config import Config
from shared.control import ControlError, PeerReplyInvalid, PeerUnavailable, call
from shared.logs import escape
from shared.ops import firewall as fw_ops
from shared.ops.base import Op, RepT, ReqT
from shared.ops.firewall_state import ApplyRequest, OutboxDueRequest, OutboxSettleRequest
from shared.stop import StopFlag

from .lapi import LapiClient, LapiError

log = logging.getLogger("fsguard.fleet")

PUSH_BATCH = 200  # alerts per POST
PUSH_IDLE = 0.2  # seconds between outbox polls when it is empty
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
APPLY_TIMEOUT = 30.0  # one chunk takes about a second to apply
APPLY_CHUNK = 10_000  # decisions per crowdsec_apply
CONTROL_TIMEOUT = 5.0
FAILURE_LOG_SECONDS = 30.0  # one line per kind of failure per this interval, then a count


class Connector:
    def __init__(self, config: Config, client: LapiClient | None = None) -> None:
        cs = config.security.crowdsec
        self.cs = cs
        self.client = client or LapiClient(
            cs.lapi_url,
            machine_id=cs.machine_id,
            password=cs.password,
            api_key=cs.bouncer_api_key,
            timeout=cs.timeout,
        )
        self.firewall = addresses.firewall_control(config.paths.runtime_dir)
        self.need_startup = True
        self.push_backoff = 0.0
        self.push_down = False  # the last push failed because the LAPI was not there
        self.next_push = 0.0
        self.next_pull = 0.0
        self.stream_errors = 0
        self.push_errors = 0
        self.rejected = 0
        self._failing = {"push": False, "sync": False}
        self._next_line = {"push": 0.0, "sync": 0.0}
        self._held = {"push": 0, "sync": 0}

    def _failed(self, what: str, message: str, *args: object) -> None:
        """One line per FAILURE_LOG_SECONDS per kind; the rest counted into the next."""
        self._failing[what] = True
        now = time.monotonic()
        if now < self._next_line[what]:
            self._held[what] += 1
            return
        held, self._held[what] = self._held[what], 0
        self._next_line[what] = now + FAILURE_LOG_SECONDS
        more = f" ({held} more failures since the last line)" if held else ""
        log.warning(message + more, *args)

    def _recovered(self, what: str) -> None:
        if self._failing[what]:
            self._failing[what] = False
            self._next_line[what] = 0.0
            log.info("%s works again", "push to LAPI" if what == "push" else "crowdsec sync")

    def _fw(self, op: Op[ReqT, RepT], req: ReqT, timeout: float = CONTROL_TIMEOUT) -> RepT:
        """One firewall op; any failure is PeerUnavailable (retried with back-off)."""
        try:
            return call(self.firewall, op, req, timeout=timeout)
        except (ControlError, PeerReplyInvalid) as exc:
            raise PeerUnavailable(f"firewall refused {op.name}: {exc}") from None

    # --- push ------------------------------------------------------------------------

    def push_once(self) -> int:
        """Send what the outbox holds (oldest first). Returns items settled; raises on a
        retryable failure (LapiError or PeerUnavailable) after settling what was sent."""
        items = self._fw(fw_ops.CROWDSEC_OUTBOX_DUE, OutboxDueRequest(limit=PUSH_BATCH)).items
        sent: list[int] = []
        try:
            i = 0
            while i < len(items):
                item_id, kind, key, _ = items[i]
                if kind == "delete":
                    self.client.delete_decisions(key)
                    sent.append(item_id)
                    i += 1
                    continue
                group = []
                while i < len(items) and items[i][1] == "alert":
                    group.append(items[i])
                    i += 1
                try:
                    self.client.push_alerts([msgspec.json.decode(g[3]) for g in group])
                except LapiError as exc:
                    if exc.retryable:
                        raise
                    self.rejected += len(group)
                    log.error("LAPI refused %d alerts, dropping them: %s", len(group), exc)
                sent.extend(g[0] for g in group)
        except LapiError as exc:
            done = set(sent)
            failed = [(it[0], str(exc)) for it in items if it[0] not in done][:1]
            self._fw(fw_ops.CROWDSEC_OUTBOX_SETTLE, OutboxSettleRequest(sent=sent, failed=failed))
            raise
        if sent:
            self._fw(fw_ops.CROWDSEC_OUTBOX_SETTLE, OutboxSettleRequest(sent=sent))
        return len(sent)

    # --- pull ------------------------------------------------------------------------

    def pull_once(self) -> dict[str, int]:
        startup = self.need_startup
        try:
            stream = self.client.stream(
                startup=startup,
                origins=self.cs.origins,
                scenarios_containing=self.cs.scenarios_containing,
                scenarios_not_containing=self.cs.scenarios_not_containing,
            )
        except LapiError:
            self.stream_errors += 1
            raise
        self.need_startup = True  # until the firewall confirms, the cursor may be lost
        # Chunks of APPLY_CHUNK: each is one batch in the firewall, whose loop serves
        # local decisions between them. The last chunk carries the deletions and, for a
        # startup answer, every id it listed (the firewall drops remote rows not listed).
        chunks = [stream.new[i : i + APPLY_CHUNK]
                  for i in range(0, len(stream.new), APPLY_CHUNK)] or [[]]  # fmt: skip
        total = {"applied": 0, "removed": 0, "refused": 0, "invalid": 0}
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            req = ApplyRequest(
                new=chunk,
                deleted=stream.deleted if last else [],
                startup=startup and last,
                present=[d.id for d in stream.new] if startup and last and len(chunks) > 1
                else None,
                skipped=stream.skipped if last else 0,
                stream_errors=self.stream_errors,
            )  # fmt: skip
            result = self._fw(fw_ops.CROWDSEC_APPLY, req, timeout=APPLY_TIMEOUT)
            total["applied"] += result.applied
            total["removed"] += result.removed
            total["refused"] += result.refused
            total["invalid"] += result.invalid
        self.need_startup = False
        return total

    # --- loop ------------------------------------------------------------------------

    def step(self, now: float) -> float:
        """Run what is due; returns the time of the next due action."""
        if self.cs.push and now >= self.next_push:
            try:
                count = self.push_once()
                self.push_backoff = 0.0
                self.next_push = now if count >= PUSH_BATCH else now + PUSH_IDLE
                self._recovered("push")
            except (LapiError, PeerUnavailable) as exc:
                self.push_errors += 1
                self.push_down = isinstance(exc, LapiError) and exc.kind in (
                    "unreachable", "timeout", "server"
                )
                self.push_backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self.push_backoff * 2))
                self.next_push = now + self.push_backoff
                self._failed("push", "push to LAPI failed (retry in %.1fs): %s",
                             self.push_backoff, escape(str(exc), 300))  # fmt: skip
        if self.cs.pull and now >= self.next_pull:
            self.next_pull = now + self.cs.poll_interval
            try:
                result = self.pull_once()
                self._recovered("sync")
                if self.push_backoff and self.push_down:  # the LAPI is back: push now
                    self.next_push = min(self.next_push, now)
                if result.get("applied") or result.get("removed"):
                    log.info(
                        "crowdsec sync: %d applied, %d removed, %d refused",
                        result.get("applied", 0), result.get("removed", 0),
                        result.get("refused", 0),
                    )  # fmt: skip
            except (LapiError, PeerUnavailable) as exc:
                self._failed("sync", "crowdsec sync failed: %s", escape(str(exc), 300))
        dues = [t for t, on in ((self.next_push, self.cs.push), (self.next_pull, self.cs.pull))
                if on]  # fmt: skip
        return min(dues) if dues else now + 1.0


def main(config: Config) -> int:
    cs = config.security.crowdsec
    if not cs.enabled:  # the systemd unit is always wanted: exit cleanly
        log.info("security.crowdsec.enabled is false: nothing to do")
        sdnotify.ready()
        return 0
    stop = StopFlag()
    connector = Connector(config)
    log.info(
        "fleet connector ready: lapi=%s push=%s pull=%s poll_interval=%gs",
        escape(cs.lapi_url), cs.push, cs.pull, cs.poll_interval,
    )  # fmt: skip
    sdnotify.ready()
    while not stop.requested:
        due = connector.step(time.monotonic())
        while not stop.requested and time.monotonic() < due:
            time.sleep(min(0.05, max(0.0, due - time.monotonic())))
    log.info("fleet connector stopped")
    return 0
