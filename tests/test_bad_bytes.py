"""A bad byte never hides an attack (issue: trustworthy core, part 2).

FreeSWITCH copies SIP header bytes into its JSON events as they arrive (cJSON escapes
quotes, backslashes and controls but passes bytes >= 0x80 raw), so any header can hold
invalid UTF-8. Every event whose source address parses must still reach the rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsguard_cli.replay import load_phases, run_replay
from fsguard_workers.engine import DetectionEngine
from fsguard_workers.events import DecodeFailure, EventDecoder, text
from fsguard_workers.repair import MAX_BODY, MAX_DEPTH
from shared.config import Config
from shared.messages import BanDecision
from tests.engine_harness import Clock
from tests.test_engine_captures import read_frames

FIXTURES = Path(__file__).parent / "fixtures"
CAPTURE = (FIXTURES / "capture_json.bin").read_bytes()
PHASES = load_phases(FIXTURES / "phases_json.txt")
ADDRESS_KEYS = {
    b"network-ip", b"network_ip", b"Caller-Network-Addr", b"variable_sip_network_ip",
    b"variable_sip_received_ip",
}
# Values the rules compare as a whole: an insertion there changes the attack itself.
SEMANTIC_KEYS = ADDRESS_KEYS | {
    b"Event-Name", b"Event-Subclass", b"Event-Date-Timestamp", b"Event-Sequence",
    b"auth-result", b"registration-type", b"profile-name", b"Unique-ID", b"Caller-Context",
    b"variable_sofia_profile_name", b"variable_sip_authorized", b"Event-Calling-File",
    b"Event-Calling-Function", b"Caller-Destination-Number", b"to-user", b"to-host",
    b"from-user", b"from-host", b"username", b"from_user", b"Caller-Username",
    b"variable_sip_from_user", b"variable_sip_from_host", b"Core-UUID", b"Command",
    b"Event-UUID", b"user-agent", b"variable_sip_user_agent",
}
UA_KEYS = (b"user-agent", b"variable_sip_user_agent")
_MEMBER = re.compile(rb'"([^"\\]+)":"((?:[^"\\]|\\.)*)"')


def reframe(bodies: list[tuple[dict[str, str], bytes]]) -> bytes:
    out = bytearray()
    for headers, body in bodies:
        head = "".join(f"{k}: {v}\n" for k, v in headers.items() if k != "Content-Length")
        out += f"Content-Length: {len(body)}\n{head}\n".encode() + body
    return bytes(out)


def banned(capture: bytes) -> set[str]:
    result = run_replay(capture, Config(), phases=PHASES)
    assert not result.error, result.error
    return {v.ip for v in result.bans}


BASELINE = banned(CAPTURE)


def test_baseline_bans_the_six_attack_phases() -> None:
    assert len(BASELINE) == 6


def test_ff_after_friendly_scanner_still_bans_every_phase() -> None:
    frames = read_frames(CAPTURE)
    mutated = [(h, b.replace(b"friendly-scanner", b"friendly-scanner\xff")) for h, b in frames]
    assert sum(b"friendly-scanner\xff" in b for _, b in mutated) > 10
    assert banned(reframe(mutated)) == BASELINE


def cjson_escape(raw: bytes) -> bytes:
    """How FreeSWITCH's cJSON writes a header value: raw bytes >= 0x80 pass through."""
    out = bytearray()
    for b in raw:
        if b == 0x22:
            out += b'\\"'
        elif b == 0x5C:
            out += b"\\\\"
        elif b < 0x20:
            out += b"\\u%04x" % b
        else:
            out.append(b)
    return bytes(out)


# No letters or digits: inserted bytes must not spell a scanner name or a number.
JUNK = st.binary(min_size=1, max_size=24).map(
    lambda b: bytes(c for c in b if not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A
                                         or 0x61 <= c <= 0x7A)) or b"\xff"
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=JUNK, raw=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_inserted_bytes_never_change_who_is_banned(junk: bytes, raw: bool, seed: int) -> None:
    """Into every event, bytes go into every header the rules do not compare whole (and
    around User-Agents): escaped as cJSON would, or raw (a broken writer: NUL, controls)."""
    import random

    rng = random.Random(seed)
    # Raw mode: what a writer that forgets to escape emits. Left out there: a raw quote or
    # backslash (it moves where the value ends, so no reader can know the value) and a raw
    # newline (the ESL reader takes it for a framing desync and reconnects: a JSON event is
    # one line, and a body that is not is most likely the next frame's headers).
    unknowable = {0x22, 0x5C, 0x0A}
    piece = (bytes(c for c in junk if c not in unknowable) or b"\xff") if raw else (
        cjson_escape(junk))

    def mutate(m: re.Match[bytes]) -> bytes:
        key, value = m.group(1), m.group(2)
        if key in UA_KEYS:
            value = piece + value if rng.random() < 0.5 else value + piece
        elif key not in SEMANTIC_KEYS and rng.random() < 0.5:
            at = rng.randrange(len(value) + 1)
            value = value[:at] + piece + value[at:]
        return b'"' + key + b'":"' + value + b'"'

    frames = [(h, _MEMBER.sub(mutate, b)) for h, b in read_frames(CAPTURE)]
    assert banned(reframe(frames)) == BASELINE


@pytest.mark.parametrize(
    "junk",
    [b"\xff\xfe", b"\x00", b"\xc0\xaf", b"\xed\xa0\x80", b"\\ud800", b"\\udfff\\ud800", b"\x1b[2J",
     b"\xa0" * 500_000],
    ids=["invalid", "nul", "overlong", "encoded-surrogate", "escaped-lone-surrogate",
         "reversed-pair", "ansi", "huge"],
)
def test_scanner_matches_around_bad_bytes(junk: bytes) -> None:
    body = (
        b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::pre_register",'
        b'"network-ip":"203.0.113.9","to-user":"1000","user-agent":"friendly-scanner'
        + junk + b'"}'
    )
    clock = Clock(0.0)
    engine = DetectionEngine(Config(), clock=clock, wallclock=clock)
    engine.handle(body, 0.0)
    (decision,) = engine.drain()
    assert isinstance(decision, BanDecision)
    assert decision.ip == "203.0.113.9" and decision.rule == "scanner_user_agent"
    assert engine.stats()["decode_errors"] == 0


def test_broken_structure_is_salvaged_member_by_member() -> None:
    # a raw quote inside the User-Agent (no FreeSWITCH writes this, a broken proxy could)
    body = (b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::register_failure",'
            b'"user-agent":"friendly-scanner"x","network-ip":"203.0.113.10","to-user":"1000"}')
    decoder = EventDecoder()
    ev = decoder.decode(body)
    assert ev.source_ip() == "203.0.113.10"
    assert text(ev.user_agent) == "friendly-scanner"
    assert decoder.salvaged == 1


def test_deep_nesting_is_refused_before_decoding_and_counted() -> None:
    deep = b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::pre_register","x":' + (
        b"[" * 1000 + b"]" * 1000) + b',"network-ip":"203.0.113.11"}'
    clock = Clock(0.0)
    engine = DetectionEngine(Config(), clock=clock, wallclock=clock)
    for _ in range(3):
        engine.handle(deep, 0.0)
    stats = engine.stats()
    assert stats["decode_errors"] == 3 and stats["decode_refused"] == 3
    assert stats["internal_errors"] == 0
    with pytest.raises(DecodeFailure, match=f"deeper than {MAX_DEPTH}"):
        EventDecoder().decode(deep)


def test_brackets_inside_strings_are_not_nesting() -> None:
    ua = b"[" * 300 + b"friendly-scanner" + b"{" * 300
    body = (b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::pre_register",'
            b'"network-ip":"203.0.113.12","user-agent":"' + ua + b'"}')
    clock = Clock(0.0)
    engine = DetectionEngine(Config(), clock=clock, wallclock=clock)
    engine.handle(body, 0.0)
    (decision,) = engine.drain()
    assert isinstance(decision, BanDecision)
    assert decision.ip == "203.0.113.12"


def test_oversized_body_is_refused_and_counted() -> None:
    body = b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::pre_register","x":"' + (
        b"a" * MAX_BODY) + b'","network-ip":"203.0.113.13"}'
    decoder = EventDecoder()
    with pytest.raises(DecodeFailure, match="over"):
        decoder.decode(body)
    assert decoder.refused == 1


def test_undecodable_event_is_logged_once_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    decoder = EventDecoder()
    with caplog.at_level("WARNING", logger="fsguard_workers.events"):
        for _ in range(50):
            with pytest.raises(DecodeFailure):
                decoder.decode(b"\x00\x01 not json at all sofia::")
    lines = [r for r in caplog.records if "undecodable event" in r.getMessage()]
    assert len(lines) == 1
    assert "\\x00" in lines[0].getMessage()
