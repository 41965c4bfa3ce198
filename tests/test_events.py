"""Decoding of ESL JSON bodies (fsguard_workers.events) and the engine's handling of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsguard_workers.events import (
    DecodeFailure,
    EventDecoder,
    Kind,
    is_forged,
    kind_of,
    maybe_relevant,
    text,
)
from tests.engine_harness import ATTACKER, Harness
from tests.sofia_events import failure, pre_register
from tests.test_engine_captures import read_frames

FIXTURES = Path(__file__).parent / "fixtures"


def _sample_body() -> bytes:
    raw = (FIXTURES / "register_failure_json.txt").read_bytes()
    return raw.split(b"\n\n", 1)[1]


def test_register_failure_sample_with_duplicate_key() -> None:
    ev = EventDecoder().decode(_sample_body())
    assert kind_of(ev) is Kind.REGISTER_FAILURE
    assert ev.source_ip() == "203.0.113.45"
    assert ev.profile_name == "internal"  # duplicated key: last wins
    assert text(ev.user_agent) == "friendly-scanner"
    assert text(ev.to_user) == "1001"
    assert ev.registration_type == "REGISTER"
    assert not is_forged(ev, _sample_body())


def test_every_real_capture_event_decodes() -> None:
    decoder = EventDecoder()
    kinds: dict[Kind, int] = {}
    frames = read_frames((FIXTURES / "capture_json.bin").read_bytes())
    for headers, body in frames:
        if headers.get("Content-Type") != "text/event-json":
            continue
        ev = decoder.decode(body)
        assert ev.event_name == json.loads(body)["Event-Name"]
        kind = kind_of(ev)
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind is not Kind.OTHER:
            assert maybe_relevant(body)
            assert not is_forged(ev, body)
            # half-born channels' hangups carry no address (freeswitch-real-events.md 2)
            assert ev.source_ip() == "127.0.0.1" or kind is Kind.HANGUP
    assert decoder.invalid_utf8 == 0
    assert kinds[Kind.REGISTER_FAILURE] == 20
    assert kinds[Kind.CHANNEL_CREATE] >= 3


def test_array_values_decode_and_join() -> None:
    body = json.loads(pre_register(ATTACKER))
    body["user-agent"] = ["Zoiper", "friendly-scanner"]
    ev = EventDecoder().decode(json.dumps(body).encode())
    assert text(ev.user_agent) == "Zoiper friendly-scanner"


def test_array_user_agent_cannot_evade_the_scanner_rule() -> None:
    body = json.loads(pre_register(ATTACKER))
    body["user-agent"] = ["x", "sipvicious"]
    h = Harness()
    (ban,) = h.feed(json.dumps(body).encode())
    assert ban.rule == "scanner_user_agent"


def test_invalid_utf8_falls_back_to_replacement() -> None:
    body = pre_register(ATTACKER, ua="friendly-scanner MARKER").replace(b"MARKER", b"\xff\xfe")
    decoder = EventDecoder()
    ev = decoder.decode(body)
    assert text(ev.user_agent) == "friendly-scanner \ufffd\ufffd"
    assert decoder.invalid_utf8 == 1
    h = Harness()
    (ban,) = h.feed(body)
    assert ban.rule == "scanner_user_agent"
    assert h.engine.stats()["invalid_utf8"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json sofia::",
        b'["sofia::register_failure"]',
        b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::register_failure"',
        b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::register_failure","network-ip":5}',
        b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::register_failure","to-user":{"a":1}}',
        b'{"Event-Name":"CUSTOM","Event-Subclass":"sofia::register_failure","user-agent":[1]}',
    ],
)
def test_bad_bodies_are_counted_never_raised(body: bytes) -> None:
    h = Harness()
    h.feed(body)
    stats = h.engine.stats()
    assert stats["processed"] == 1
    # salvaged bodies without a usable source address end as "ignored"
    assert stats["decode_errors"] + stats["irrelevant"] + stats["ignored"] == 1
    assert stats["internal_errors"] == 0


def test_decoder_raises_decode_failure_on_wrong_types() -> None:
    with pytest.raises(DecodeFailure):
        EventDecoder().decode(b'{"Event-Name":5}')


def test_irrelevant_events_skip_decoding() -> None:
    h = Harness()
    h.feed(b'{"Event-Name":"HEARTBEAT","Core-UUID":"x"}')
    h.feed(b'{"Event-Name":"CHANNEL_STATE","Caller-Network-Addr":"198.51.100.7"}')
    assert h.engine.stats()["irrelevant"] == 2
    assert h.engine.stats()["decode_errors"] == 0


def test_unicode_escapes_decode() -> None:
    body = failure(ATTACKER, ua="sipvicious").replace(b"sipvicious", b"sip\\u0076icious")
    ev = EventDecoder().decode(body)
    assert text(ev.user_agent) == "sipvicious"
