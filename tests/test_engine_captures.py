"""The real FreeSWITCH capture (SIPp + SIPVicious attacks) through the engine.

Frames are parsed here (`Content-Length: N` header block, blank line, N bytes).
Every source-address header is rewritten so that each attack phase comes from
its own address; the phase of an event is found from its Event-Date-Timestamp
and phases_json.txt. sofia::wrong_call_state fires ~10 s after the challenged
INVITE that caused it (the half-born channel is reaped), so it is attributed to
the phase 10 s earlier.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fsguard_workers.engine import DetectionEngine
from shared.config import Config
from shared.messages import BanDecision, KillCall
from tests.engine_harness import Clock

FIXTURES = Path(__file__).parent / "fixtures"
CAPTURE_IP = b"127.0.0.1"
IP_KEYS = (
    b'"network-ip":"',
    b'"network_ip":"',
    b'"Caller-Network-Addr":"',
    b'"variable_sip_network_ip":"',
    b'"variable_sip_received_ip":"',
)
REAP_DELAY = 10.0


def read_frames(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    frames = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n\n", pos)
        assert end >= 0, "truncated header block"
        headers = dict(line.split(": ", 1) for line in data[pos:end].decode().split("\n") if line)
        length = int(headers.get("Content-Length", "0"))
        frames.append((headers, data[end + 2 : end + 2 + length]))
        pos = end + 2 + length
    return frames


def read_phases() -> list[tuple[float, str]]:
    phases = []
    for line in (FIXTURES / "phases_json.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "BEGIN":
            phases.append((float(parts[0]), parts[2].split("_", 1)[0]))
    return phases


@dataclass
class Replay:
    events: list[tuple[str, float, bytes]] = field(default_factory=list)  # phase, ts, body
    address: dict[str, str] = field(default_factory=dict)


def build_replay() -> Replay:
    phases = read_phases()
    replay = Replay()
    for i, (_, name) in enumerate(phases):
        replay.address[name] = f"198.51.100.{10 + i}"

    def phase_of(ts: float) -> str:
        current = "pre"
        for start, name in phases:
            if ts >= start - 0.001:
                current = name
        return current

    for headers, body in read_frames((FIXTURES / "capture_json.bin").read_bytes()):
        if headers.get("Content-Type") != "text/event-json":
            continue
        event = json.loads(body)
        ts = int(event["Event-Date-Timestamp"]) / 1e6
        lookup = ts - REAP_DELAY if event.get("Event-Subclass") == "sofia::wrong_call_state" else ts
        name = phase_of(lookup)
        new_ip = replay.address.get(name, "198.51.100.250").encode()
        for key in IP_KEYS:
            body = body.replace(key + CAPTURE_IP + b'"', key + new_ip + b'"')
        replay.events.append((name, ts, body))
    return replay


@pytest.fixture(scope="module")
def replay() -> Replay:
    return build_replay()


def run(replay: Replay, config: Config | None = None) -> tuple[DetectionEngine, list[object]]:
    clock = Clock(0.0)
    engine = DetectionEngine(config or Config(), clock=clock, wallclock=clock)
    outputs: list[object] = []
    for _, ts, body in replay.events:
        clock.now = ts
        engine.handle(body, ts)
        outputs.extend(engine.drain())
        engine.tick()
    return engine, outputs


def test_capture_parses_and_has_the_expected_security_events(replay: Replay) -> None:
    kinds: Counter[str] = Counter()
    for _, _, body in replay.events:
        event = json.loads(body)
        kinds[event.get("Event-Subclass") or event["Event-Name"]] += 1
    assert kinds["sofia::register_failure"] == 20  # a 5, b 3, d2 3, d3 1, f3 8
    assert kinds["sofia::register"] == 2  # c and the cracked f3 registration
    assert kinds["sofia::wrong_call_state"] == 5  # d1 3, f2 2
    assert kinds["CHANNEL_CREATE"] >= 3


def test_unrewritten_capture_is_trusted_loopback() -> None:
    clock = Clock(0.0)
    engine = DetectionEngine(Config(), clock=clock, wallclock=clock)
    for headers, body in read_frames((FIXTURES / "capture_json.bin").read_bytes()):
        if headers.get("Content-Type") == "text/event-json":
            clock.now = int(json.loads(body)["Event-Date-Timestamp"]) / 1e6
            engine.handle(body, clock.now)
    assert engine.drain() == []
    assert engine.stats()["trusted_skipped"] > 50


def test_phases(replay: Replay) -> None:
    engine, outputs = run(replay)
    stats = engine.stats()
    assert stats["decode_errors"] == 0
    assert stats["forged"] == 0
    assert stats["internal_errors"] == 0
    by_ip: dict[str, list[BanDecision]] = {}
    for out in outputs:
        if isinstance(out, BanDecision):
            by_ip.setdefault(out.ip, []).append(out)
    kills = [out for out in outputs if isinstance(out, KillCall)]
    addr = replay.address

    def bans(phase: str) -> list[str]:
        return [d.rule for d in by_ip.get(addr[phase], [])]

    # (a) 5 wrong passwords for 1000: FORBIDDEN + failure counted once -> banned at the 5th
    assert bans("a") == ["failed_auth"]
    (a_ban,) = by_ip[addr["a"]]
    assert a_ban.reason == "Exceeded max failed registrations (5)"
    assert a_ban.user == "1000"
    assert a_ban.evidence_count == 5
    # legitimate or below-threshold phases ban nothing
    for phase in ("b", "c", "d1", "d2", "d3", "e", "c2"):
        assert bans(phase) == [], phase
    # the legitimate registration is learned, the legitimate call is not killed
    assert addr["c"] in engine.whitelist_snapshot()
    e_uuids = {
        json.loads(body)["Unique-ID"]
        for phase, _, body in replay.events
        if phase == "e" and b'"Event-Name":"CHANNEL_CREATE"' in body
    }
    assert e_uuids and not e_uuids & {k.uuid for k in kills}
    # (h1) sipcli/v1.8 dials 011... on external/public, unauthenticated: banned, call killed
    assert bans("h1") == ["toll_fraud"]
    assert [k.reason for k in kills].count("toll-fraud") == 1
    # (h2) same scanner UA to an internal extension: banned as a scanner
    assert bans("h2") == ["scanner_user_agent"]
    # SIPVicious phases: banned on the first event, once
    for phase in ("f1", "f2", "f3"):
        assert bans(phase) == ["scanner_user_agent"], phase
        assert "friendly-scanner" in by_ip[addr[phase]][0].reason
    # the cracked registration (f3) is never whitelisted
    assert addr["f3"] not in engine.whitelist_snapshot()
    # OPTIONS scans are invisible in ESL
    for phase in ("f1b", "g1", "g2"):
        assert bans(phase) == [], phase


def test_f3_banned_before_any_failure(replay: Replay) -> None:
    clock = Clock(0.0)
    engine = DetectionEngine(Config(), clock=clock, wallclock=clock)
    f3 = [(ts, body) for phase, ts, body in replay.events if phase == "f3"]
    clock.now = f3[0][0]
    engine.handle(f3[0][1], f3[0][0])
    assert b"sofia::pre_register" in f3[0][1]
    (decision,) = engine.drain()
    assert isinstance(decision, BanDecision) and decision.rule == "scanner_user_agent"
    assert decision.event_ts == f3[0][0]


def test_without_scanner_patterns_svcrack_is_caught_by_failed_auth(replay: Replay) -> None:
    config = Config()
    config.security.scanner_user_agents = []
    _, outputs = run(replay, config)
    rules_by_ip: dict[str, list[str]] = {}
    for out in outputs:
        if isinstance(out, BanDecision):
            rules_by_ip.setdefault(out.ip, []).append(out.rule)
    assert rules_by_ip[replay.address["f3"]] == ["failed_auth"]
    assert rules_by_ip[replay.address["h1"]] == ["toll_fraud"]
    assert replay.address["f1"] not in rules_by_ip


def test_auto_block_disabled_emits_no_decision(replay: Replay) -> None:
    config = Config()
    config.security.auto_block_enabled = False
    engine, outputs = run(replay, config)
    assert not [o for o in outputs if isinstance(o, BanDecision)]
    assert engine.stats()["suppressed"] > 0
