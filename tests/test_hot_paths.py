"""The byte-level shortcuts of the per-event hot path agree with the full decode on
every event of the real FreeSWITCH captures (and on crafted edge cases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsguard_supervisor.esl_client import DEFAULT_EVENTS
from fsguard_workers.events import EventDecoder, Kind, kind_of, maybe_relevant, relevant_label
from fsguard_workers.process import event_label
from shared.iputil import SOURCE_IP_KEYS, find_source_ip

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = [ROOT / "tests" / "fixtures" / "capture_json.bin",
            Path("/work/shared/esl-captures/real/capture_json.bin")]


def _bodies() -> list[bytes]:
    data = CAPTURES[0].read_bytes()
    out = []
    marker = b"Content-Type: text/event-json\n\n"
    pos = 0
    while (i := data.find(marker, pos)) >= 0:
        head = data.rfind(b"Content-Length: ", 0, i)
        length = int(data[head + 16 : data.index(b"\n", head)])
        out.append(data[i + len(marker) : i + len(marker) + length])
        pos = i + len(marker) + length
    return out


def _compact(event: dict[str, str]) -> bytes:
    """JSON as FreeSWITCH's cJSON writes it (no spaces)."""
    return json.dumps(event, separators=(",", ":")).encode()


def _decoded_source_ip(body: bytes) -> bytes | None:
    """The reference, from the full JSON decode (not a copy of the byte search): the
    value of the first header named in SOURCE_IP_KEYS, in that order, that the event
    has. (Real addresses hold no escape and are short: the byte search's refusals of
    those never apply to the captures.)"""
    event = json.loads(body)
    for key in SOURCE_IP_KEYS:
        name = key.decode().split('"')[1]
        if name in event:
            return str(event[name]).encode()
    return None


def test_capture_has_every_kind_of_event() -> None:
    bodies = _bodies()
    assert len(bodies) > 300
    names = {json.loads(b)["Event-Name"] for b in bodies}
    assert {"CHANNEL_CREATE", "CHANNEL_HANGUP_COMPLETE", "CUSTOM", "HEARTBEAT"} <= names


def test_find_source_ip_matches_the_full_decode_on_real_events() -> None:
    found = 0
    for body in _bodies():
        expected = _decoded_source_ip(body)
        assert find_source_ip(body) == expected, body[:120]
        found += expected is not None
    assert found > 100  # the captures' events do carry source addresses


def test_maybe_relevant_is_exact_on_real_events() -> None:
    decoder = EventDecoder()
    relevant = 0
    for body in _bodies():
        kind = kind_of(decoder.decode(body))
        assert maybe_relevant(body) == (kind is not Kind.OTHER), body[:120]
        assert relevant_label(event_label(body)) == (kind is not Kind.OTHER), body[:120]
        relevant += kind is not Kind.OTHER
    assert relevant > 50


@pytest.mark.parametrize("event, expected", [
    ({"Event-Name": "CUSTOM", "Event-Subclass": "sofia::register_failure"}, True),
    ({"Event-Name": "CUSTOM", "Event-Subclass": "conference::maintenance"}, False),
    ({"Event-Name": "CUSTOM"}, False),
    ({"Event-Name": "CHANNEL_CREATE"}, True),
    ({"Event-Name": "CHANNEL_STATE", "variable_x": "sofia::register CHANNEL_CREATE"}, False),
    ({"Event-Subclass": "sofia::register"}, True),  # no name key: the decoder decides
    ({"Event-Name": "CUSTOM", "Event-Subclass": "sofia::unregister"}, True),
    ({"Event-Name": "CHANNEL_HANGUP_COMPLETE"}, True),
    ({"Event-Name": "CUSTOM", "Event-Subclass": "sofia::gateway_state"}, False),
])
def test_maybe_relevant_edge_cases(event: dict[str, str], expected: bool) -> None:
    assert maybe_relevant(_compact(event)) is expected
    if "Event-Name" in event:  # without it the label is "other": never relevant (kind_of)
        assert relevant_label(event_label(_compact(event))) is expected


def test_channel_events_use_caller_network_addr() -> None:
    body = _compact({"Event-Name": "CHANNEL_CREATE", "Caller-Network-Addr": "192.0.2.9",
                     "variable_sip_network_ip": "192.0.2.10"})
    assert find_source_ip(body) == b"192.0.2.9"
    sofia = _compact({"Event-Name": "CUSTOM", "Event-Subclass": "sofia::register",
                      "variable_sip_network_ip": "192.0.2.10", "network-ip": "192.0.2.11"})
    assert find_source_ip(sofia) == b"192.0.2.11"


def test_the_subscription_is_what_the_rules_read() -> None:
    """FreeSWITCH is asked only for events some rule reads (plus HEARTBEAT, for liveness):
    everything else would cost framing and dispatch for nothing."""
    decoder = EventDecoder()
    for name in DEFAULT_EVENTS:
        if name in ("HEARTBEAT", "CUSTOM"):
            continue
        event = ({"Event-Name": "CUSTOM", "Event-Subclass": name} if "::" in name
                 else {"Event-Name": name})
        body = _compact(event)
        assert maybe_relevant(body), name
        assert kind_of(decoder.decode(body)) is not Kind.OTHER, name
