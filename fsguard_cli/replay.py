"""`fsguard replay`: run the real detection engine over a raw ESL capture, offline.

Nothing touches the kernel or FreeSWITCH: the capture's frames (plain or json, detected
per frame by Content-Type) are fed in order to one in-process `DetectionEngine` whose
clock is the capture's `Event-Date-Timestamp`, so sliding windows behave as they did live,
whether the replay runs flat out (`--max`, the default) or paced (`--speed N`: the
recorded gaps divided by N).

Source addresses. Real captures come from 127.0.0.1, which is trusted by default, so every
source-address header (`network-ip`, `network_ip`, `Caller-Network-Addr`,
`variable_sip_network_ip`, `variable_sip_received_ip`) is rewritten to `--rewrite-ip`
(default 203.0.113.50) unless `--keep-ips`. With `--per-phase PHASES_FILE` (lines
`<unix time> BEGIN <phase name>`, as tests/fixtures/phases_*.txt) the n-th phase gets
203.0.113.<n> (n from 1); an event belongs to the last phase begun at its timestamp, except
`sofia::wrong_call_state`, which FreeSWITCH emits when it reaps a half-born channel ~10 s
after the INVITE that caused it, so it is attributed to the phase 10 s earlier.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fsguard_cli.simulator import rewrite_source_ip
from fsguard_supervisor.esl_protocol import (
    CT_EVENT_JSON,
    CT_EVENT_PLAIN,
    ProtocolError,
    event_from_plain,
    iter_capture_frames,
    serialize_json,
)
from fsguard_workers.engine import DetectionEngine
from shared.config import Config
from shared.messages import BanDecision, KillCall

from .output import Progress
from .replay_report import render_json, render_text

DEFAULT_REWRITE_IP = "203.0.113.50"
PHASE_NET = "203.0.113."
REAP_DELAY = 10.0  # seconds between a challenged INVITE and its sofia::wrong_call_state
PROGRESS_MIN_EVENTS = 2000

_IP_HEADERS = rb"network-ip|network_ip|Caller-Network-Addr|variable_sip_network_ip|" \
    rb"variable_sip_received_ip"
_JSON_IP_RE = re.compile(rb'"(' + _IP_HEADERS + rb')":"[^"]*"')
_JSON_FIELD = {
    name: re.compile(b'"' + name.encode() + rb'":"([^"]*)"')
    for name in ("Event-Name", "Event-Subclass", "Event-Date-Timestamp", "Event-Sequence")
}


class CaptureError(Exception):
    """The capture file cannot be used at all (unreadable, bad phases file)."""


@dataclass(frozen=True)
class Phase:
    start: float
    name: str
    ip: str


def load_phases(path: str | Path) -> list[Phase]:
    """Phases of a phases_*.txt file: one per `<ts> BEGIN <name>` line, in file order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CaptureError(f"cannot read phases file {path}: {exc.strerror or exc}") from exc
    phases: list[Phase] = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "BEGIN":
            try:
                start = float(parts[0])
            except ValueError:
                raise CaptureError(f"{path}:{number}: bad timestamp {parts[0]!r}") from None
            n = len(phases) + 1
            if n > 254:
                raise CaptureError(f"{path}: more than 254 phases")
            phases.append(Phase(start, parts[2], f"{PHASE_NET}{n}"))
    if not phases:
        raise CaptureError(f"{path}: no '<timestamp> BEGIN <name>' line")
    return sorted(phases, key=lambda p: p.start)


def phase_at(phases: Sequence[Phase], ts: float, event: str) -> Phase | None:
    lookup = ts - REAP_DELAY if event == "sofia::wrong_call_state" else ts
    current = None
    for phase in phases:
        if lookup >= phase.start - 0.001:
            current = phase
        else:
            break
    return current


@dataclass
class Verdict:
    """One decision of the engine, with the event that triggered it."""

    kind: str  # "ban" | "kill" | "simulated" (a rule in simulate mode: never applied)
    event_number: int  # 1-based position among the capture's events
    event_sequence: str  # the event's Event-Sequence header
    event: str  # Event-Name, or the subclass of a CUSTOM event
    timestamp: float
    phase: str
    ip: str = ""
    rule: str = ""
    reason: str = ""
    duration: float = 0.0
    user: str = ""
    user_agent: str = ""
    evidence_count: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)
    uuid: str = ""

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        if self.kind == "kill":
            for key in ("ip", "rule", "duration", "user", "user_agent", "evidence_count",
                        "evidence"):
                data.pop(key, None)
        else:
            data.pop("uuid", None)
        return data


@dataclass
class ReplayResult:
    capture: str
    frames: int = 0
    events: int = 0
    formats: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    verdicts: list[Verdict] = field(default_factory=list)
    engine_stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    capture_span: float = 0.0
    error: str = ""
    error_offset: int = -1
    addresses: str = ""

    @property
    def bans(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.kind == "ban"]

    @property
    def kills(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.kind == "kill"]

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "capture": self.capture,
            "frames": self.frames,
            "events": self.events,
            "formats": dict(self.formats),
            "addresses": self.addresses,
            "bans": [v.as_json() for v in self.bans],
            "kills": [v.as_json() for v in self.kills],
            "simulated": [v.as_json() for v in self.verdicts if v.kind == "simulated"],
            "summary": {
                "events_by_type": dict(self.by_type.most_common()),
                "decisions_by_rule": dict(Counter(v.rule for v in self.bans).most_common()),
                "seconds": round(self.seconds, 6),
                "events_per_second": round(self.events_per_second, 1),
                "capture_span_seconds": round(self.capture_span, 3),
                "engine": self.engine_stats,
            },
            "error": {"message": self.error, "offset": self.error_offset} if self.error else None,
        }


class CaptureClock:
    """The engine's clock: the timestamp of the event being processed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _json_field(body: bytes, name: str) -> str:
    m = _JSON_FIELD[name].search(body)
    return m.group(1).decode("utf-8", "replace") if m else ""


def _rewrite_json(body: bytes, ip: str) -> bytes:
    new = ip.encode()
    return _JSON_IP_RE.sub(lambda m: b'"' + m.group(1) + b'":"' + new + b'"', body)


def run_replay(
    data: bytes,
    config: Config,
    *,
    capture: str = "",
    speed: float | None = None,
    rewrite_ip: str | None = DEFAULT_REWRITE_IP,
    phases: Sequence[Phase] | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayResult:
    """Replay `data` (a raw ESL capture) through a fresh engine; never raises on bad data.

    A framing error ends the replay: `error` / `error_offset` are set and the results
    so far are kept.
    """
    clock = CaptureClock()
    engine = DetectionEngine(config, clock=clock, wallclock=clock)
    result = ReplayResult(capture=capture)
    if phases:
        result.addresses = f"per phase: {PHASE_NET}1..{len(phases)} " \
            f"(outside every phase: {rewrite_ip or 'kept'})"
    elif rewrite_ip:
        result.addresses = f"every source rewritten to {rewrite_ip}"
    else:
        result.addresses = "kept as captured"
    first_ts = 0.0
    last_ts = 0.0
    started = time.perf_counter()
    paced_start = time.monotonic()
    slept = 0.0
    frames = iter_capture_frames(data)
    try:
        for frame in frames:
            result.frames += 1
            ctype = frame.content_type
            if ctype == CT_EVENT_JSON:
                body = frame.body
                name = _json_field(body, "Event-Name")
                if name == "CUSTOM":
                    name = _json_field(body, "Event-Subclass") or name
                ts_text = _json_field(body, "Event-Date-Timestamp")
                seq = _json_field(body, "Event-Sequence")
                headers: list[tuple[str, str]] | None = None
                inner: bytes | None = None
            elif ctype == CT_EVENT_PLAIN:
                headers, inner = event_from_plain(frame.body)
                values = dict(reversed(headers))  # first occurrence wins
                name = values.get("Event-Name", "")
                if name == "CUSTOM":
                    name = values.get("Event-Subclass", "") or name
                ts_text = values.get("Event-Date-Timestamp", "")
                seq = values.get("Event-Sequence", "")
            else:
                continue  # auth/request, command/reply, disconnect notice ...
            result.events += 1
            result.formats["json" if ctype == CT_EVENT_JSON else "plain"] += 1
            result.by_type[name or "(unnamed)"] += 1
            ts = int(ts_text) / 1e6 if ts_text.isdigit() else 0.0
            if ts:
                if not first_ts:
                    first_ts = ts
                last_ts = max(last_ts, ts)
                clock.now = max(clock.now, ts)  # never backwards
                if speed is not None:
                    due = paced_start + (ts - first_ts) / speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        sleep(delay)
                        slept += delay
            phase = phase_at(phases, ts, name) if phases and ts else None
            ip = phase.ip if phase is not None else rewrite_ip
            if headers is None:
                json_body = _rewrite_json(frame.body, ip) if ip else frame.body
            else:
                json_body = serialize_json(rewrite_source_ip(headers, ip), inner)
            engine.handle(json_body, ts or time.time())
            for out in engine.drain():
                result.verdicts.append(_verdict(out, result.events, seq, name, ts, phase))
            if result.events % 128 == 0:
                engine.tick()
                if progress is not None:
                    progress.update(result.events)
    except ProtocolError as exc:
        result.error = str(exc)
        result.error_offset = exc.offset
    result.seconds = max(1e-9, time.perf_counter() - started - slept)
    result.capture_span = max(0.0, last_ts - first_ts)
    result.engine_stats = engine.stats()
    if progress is not None:
        progress.close()
    return result


def _verdict(
    out: BanDecision | KillCall, number: int, seq: str, name: str, ts: float, phase: Phase | None
) -> Verdict:
    phase_name = phase.name if phase is not None else ""
    if isinstance(out, KillCall):
        return Verdict(kind="kill", event_number=number, event_sequence=seq, event=name,
                       timestamp=ts, phase=phase_name, uuid=out.uuid, reason=out.reason)
    return Verdict(
        kind="simulated" if out.source == "simulated" else "ban", event_number=number,
        event_sequence=seq, event=name, timestamp=ts, phase=phase_name, ip=out.ip,
        rule=out.rule, reason=out.reason, duration=out.duration, user=out.user,
        user_agent=out.user_agent, evidence_count=out.evidence_count,
        evidence=dict(out.evidence),
    )


def count_events(data: bytes) -> int:
    """Cheap upper bound of the number of event frames (for the progress bar)."""
    return data.count(b"Content-Type: text/event-")


def main(
    capture: str,
    config: Config,
    *,
    speed: float | None,
    rewrite_ip: str | None,
    phases_file: str | None,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        data = Path(capture).read_bytes()
    except OSError as exc:
        raise CaptureError(f"cannot read capture {capture}: {exc.strerror or exc}") from exc
    phases = load_phases(phases_file) if phases_file else None
    total = count_events(data)
    progress = Progress(total, err, label="replay ") if total >= PROGRESS_MIN_EVENTS else None
    result = run_replay(data, config, capture=capture, speed=speed, rewrite_ip=rewrite_ip,
                        phases=phases, progress=progress)
    if as_json:
        render_json(result, out)
    else:
        render_text(result, out, speed=speed)
    out.flush()
    if result.error:
        err.write(f"fsguard replay: {capture}: corrupt or truncated capture at byte offset "
                  f"{result.error_offset}: {result.error}; the results above cover the "
                  f"{result.events} events before it\n")
        return 1
    return 0
