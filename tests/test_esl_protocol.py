"""ESL framing and event (de)serialization against real FreeSWITCH bytes."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsguard_supervisor import esl_events as ev
from fsguard_supervisor.esl_protocol import Frame, FrameParser, ProtocolError, iter_capture_frames

FIXTURES = Path(__file__).parent / "fixtures"
PLAIN = (FIXTURES / "capture_plain.bin").read_bytes()
JSON = (FIXTURES / "capture_json.bin").read_bytes()
CAPTURES = {"plain": (PLAIN, 335), "json": (JSON, 336)}


def _frames(data: bytes) -> list[Frame]:
    return list(iter_capture_frames(data))


def _sample(name: str) -> list[Frame]:
    return _frames((FIXTURES / name).read_bytes())


def _split_feed(data: bytes, cuts: list[int]) -> list[Frame]:
    parser = FrameParser()
    out: list[Frame] = []
    prev = 0
    for cut in [*sorted(cuts), len(data)]:
        out += parser.feed(data[prev:cut])
        prev = cut
    assert parser.buffered == 0
    return out


ONE_SHOT = {name: _frames(data) for name, (data, _) in CAPTURES.items()}


# --- framing -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "json"])
def test_capture_frame_counts(name: str) -> None:
    data, count = CAPTURES[name]
    frames = ONE_SHOT[name]
    assert len(frames) == count
    assert FrameParser().feed(data) == frames
    kinds = Counter(f.content_type for f in frames)
    assert kinds[f"text/event-{name}"] == count - 5
    assert frames[0].content_type == "auth/request"
    assert frames[-1].content_type == "text/disconnect-notice"
    assert frames[2].header("reply-text") == f"+OK event listener enabled {name}"
    # the body is bounded by the outer Content-Length, byte for byte
    for f in frames:
        if f.header("Content-Length") is not None:
            assert len(f.body) == int(f.header("Content-Length") or "")


@pytest.mark.parametrize("name", ["plain", "json"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_split_lists_give_same_frames(name: str, data: st.DataObject) -> None:
    raw, _ = CAPTURES[name]
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=60))
    assert _split_feed(raw, cuts) == ONE_SHOT[name]


def _offsets(frames: list[Frame]) -> list[int]:
    offsets = [0]
    for f in frames:
        offsets.append(offsets[-1] + len(_wire(f)))
    return offsets


def _wire(f: Frame) -> bytes:
    head = "".join(f"{k}: {v}\n" for k, v in f.headers).encode()
    return head + b"\n" + f.body


@pytest.mark.parametrize("name", ["plain", "json"])
def test_every_single_split_in_head_and_tail(name: str) -> None:
    raw, count = CAPTURES[name]
    frames = ONE_SHOT[name]
    offsets = _offsets(frames)
    assert offsets[-1] == len(raw)
    stop = next(i for i, off in enumerate(offsets) if off >= 20 * 1024)
    start = next(i for i in range(count, 0, -1) if len(raw) - offsets[i] >= 8 * 1024)
    head, head_frames = raw[: offsets[stop]], frames[:stop]
    tail, tail_frames = raw[offsets[start] :], frames[start:]
    for segment, expected in ((head, head_frames), (tail, tail_frames)):
        for cut in range(len(segment) + 1):
            parser = FrameParser()
            got = parser.feed(segment[:cut]) + parser.feed(segment[cut:])
            assert got == expected, cut


def test_byte_by_byte_stream_session() -> None:
    data = (FIXTURES / "stream_session.txt").read_bytes()
    parser = FrameParser()
    got: list[Frame] = []
    for i in range(len(data)):
        got += parser.feed(data[i : i + 1])
    assert got == _frames(data)
    assert len(got) == 9


def test_header_order_crlf_and_stray_blank_lines() -> None:
    body = b'{"Event-Name":"HEARTBEAT"}'
    first = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body
    second = b"Content-Type: text/event-json\nContent-Length: %d\n\n" % len(body) + body
    crlf = b"Content-Type: api/response\r\nContent-Length: 5\r\n\r\n+OK\r\n"
    reply = b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: a:b\nJob-UUID: a:b\n\n"
    frames = FrameParser().feed(first + second + b"\n" + crlf + reply)
    assert [f.content_type for f in frames] == [
        "text/event-json", "text/event-json", "api/response", "command/reply"]
    assert frames[0].body == frames[1].body == body
    assert frames[2].body == b"+OK\r\n"
    assert frames[3].header("Reply-Text") == "+OK Job-UUID: a:b"
    assert frames[3].header("job-uuid") == "a:b"


def test_events_and_other_frames_split_by_feed_events() -> None:
    parser = FrameParser()
    bodies, others = parser.feed_events(JSON)
    assert len(bodies) == 331 and len(others) == 5
    assert bodies == [f.body for f in ONE_SHOT["json"] if f.content_type == "text/event-json"]


def test_log_data_with_empty_user_data() -> None:
    frames = _sample("log_data.txt")
    assert frames[0].content_type == "log/data"
    assert frames[0].header("User-Data") == ""


BAD = [
    b"Content-Type: text/event-plain\nContent-Length: -1\n\n",
    b"Content-Type: text/event-plain\nContent-Length: -2\n\n",
    b"Content-Type: text/event-plain\nContent-Length: 99999999999\n\n",
    b"Content-Length: 17000000\nContent-Type: text/event-json\n\n",
    b"Content-Type: text/event-plain\nContent-Length: abc\n\n",
    b"Content-Type: text/event-plain\nContent-Length: \n\n",
    b"Content-Type: text/event-plain\nContent-Length: 1_0\n\n",
    b"Content-Type: text/event-plain\nContent-Length: +5\n\n",
    "Content-Type: text/event-plain\nContent-Length: \u0663\n\n".encode(),
    b"Content-Type: text/event-plain\nContent-Length: 0x10\n\n",
    b"Content-Type: command/reply\nthis line has no colon\n\n",
    b"}garbage after a miscounted body\n\n",
]


@pytest.mark.parametrize("bad", BAD)
def test_malformed_frames_raise(bad: bytes) -> None:
    good = (FIXTURES / "auth_ok.txt").read_bytes()
    parser = FrameParser()
    with pytest.raises(ProtocolError) as info:
        parser.feed(good + bad + good)
    assert [f.content_type for f in info.value.frames] == ["command/reply"]
    assert info.value.offset == len(good)


def test_header_and_body_limits() -> None:
    parser = FrameParser(max_header_bytes=1024)
    parser.feed(b"Content-Type: x/y\n" + b"X-Pad: " + b"a" * 900)  # still below the limit
    with pytest.raises(ProtocolError, match="without terminator"):
        parser.feed(b"a" * 200)
    with pytest.raises(ProtocolError, match="header block over"):
        FrameParser(max_header_bytes=64).feed(b"Content-Type: x/y\nX: " + b"b" * 100 + b"\n\n")
    with pytest.raises(ProtocolError, match="over the limit"):
        FrameParser(max_body_bytes=100).feed(b"Content-Type: x/y\nContent-Length: 101\n\n")
    ok = FrameParser(max_body_bytes=100).feed(
        b"Content-Type: x/y\nContent-Length: 100\n\n" + b"z" * 100)
    assert ok[0].body == b"z" * 100


def test_iter_capture_partial_results_on_truncation_and_corruption() -> None:
    frames = ONE_SHOT["json"]
    cut = len(JSON) - 10
    got: list[Frame] = []
    with pytest.raises(ProtocolError) as info:
        for f in iter_capture_frames(JSON[:cut]):
            got.append(f)
    assert got == frames[:-1]
    assert info.value.offset == len(JSON) - len(_wire(frames[-1]))
    # corrupt the 4th frame's Content-Length
    start = JSON.index(b"Content-Length: 823")
    corrupt = JSON[:start] + b"Content-Length: 8x3" + JSON[start + 19 :]
    got = []
    with pytest.raises(ProtocolError) as info:
        for f in iter_capture_frames(corrupt):
            got.append(f)
    assert got == frames[:3]
    assert info.value.offset == start


# --- plain / json events -------------------------------------------------------------


def test_plain_sample_decodes_quirks() -> None:
    headers, inner = ev.parse_plain_event(_sample("quirk_passthrough_percent.txt")[0].body)
    assert inner == b""
    assert dict(headers)["user-agent"] == "evil\nfrom ip 192.0.2.99 A %4a \u20ac|:x"
    assert [k for k, _ in headers].count("profile-name") == 2
    headers, _ = ev.parse_plain_event(b"a: 1%2B1+2\nb: ARRAY%3A%3Ax%7C%3Ay\nc: %FF%FE\n\n")
    assert headers[0] == ("a", "1+1+2")
    assert headers[1] == ("b", "ARRAY::x|:y")
    assert headers[2][1].encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_background_job_body_kept_whole() -> None:
    body = _sample("background_job.txt")[0].body
    headers, inner = ev.parse_plain_event(body)
    assert headers[-1] == ("Content-Length", str(len(inner)))
    assert inner.startswith(b"UP 0 years") and inner.endswith(b"240K/8192K\n")
    as_json = ev.plain_to_json(body)
    obj = json.loads(as_json)
    assert obj["_body"].encode() == inner and obj["Content-Length"] == str(len(inner))
    assert ev.json_to_plain(as_json) == body


def _json_pairs(body: bytes) -> list[tuple[str, str]]:
    pairs = json.loads(body, object_pairs_hook=list)
    return [(k, "ARRAY::" + "|:".join(v) if isinstance(v, list) else v) for k, v in pairs]


def test_json_sample_and_plain_twin_are_the_same_event() -> None:
    plain = _sample("register_failure.txt")[0].body
    as_json = _sample("register_failure_json.txt")[0].body
    headers, inner = ev.parse_plain_event(plain)
    assert headers == _json_pairs(as_json)
    assert inner == b""
    assert ev.plain_to_json(plain) == as_json
    assert ev.json_to_plain(as_json) == plain


@pytest.mark.parametrize("name", ["plain", "json"])
def test_real_capture_events_round_trip(name: str) -> None:
    events = [f.body for f in ONE_SHOT[name] if f.content_type.startswith("text/event-")]
    for body in events:
        if name == "plain":
            as_json = ev.plain_to_json(body)
            assert _json_pairs(as_json)[: len(ev.parse_plain_event(body)[0])] == \
                ev.parse_plain_event(body)[0]
            assert ev.json_to_plain(as_json) == body
        else:
            assert ev.plain_to_json(ev.json_to_plain(body)) == body


def test_url_encode_rules() -> None:
    assert ev.url_encode(b"Fri, 14 Mar 2025 09:26:53 GMT") == \
        b"Fri,%2014%20Mar%202025%2009%3A26%3A53%20GMT"
    assert ev.url_encode(b"!$'()*,-./_~aZ09") == b"!$'()*,-./_~aZ09"
    assert ev.url_encode(b"evil%0Ax %41 %4a \xe2\x82\xac|:") == \
        b"evil%0Ax%20%41%20%254a%20%E2%82%AC%7C%3A"
    assert ev.url_encode(b"%4") == b"%254" and ev.url_encode(b"%") == b"%25"
    assert ev.url_encode(b"\x00\x1f\x7f+") == b"%00%1F%7F%2B"


def test_cjson_escaping_and_raw_high_bytes() -> None:
    ua = b"\xff\xc3(".decode("utf-8", "surrogateescape")
    headers = [("k", "a\"b\\c\n\r\t\x08\x0c\x01"), ("ua", ua)]
    out = ev.serialize_json(headers)
    assert out == b'{"k":"a\\"b\\\\c\\n\\r\\t\\b\\f\\u0001","ua":"\xff\xc3("}'
    assert b"\n" not in out
    assert ev.event_from_json(out) == (headers, None)


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_names, _text), max_size=8), st.one_of(st.none(), st.binary(max_size=40)))
def test_serializers_round_trip(headers: list[tuple[str, str]], body: bytes | None) -> None:
    headers = [(k, v) for k, v in headers if v and k != "Content-Length"]
    if body is not None:
        body = body.replace(b"\x00", b"")
    # plain: a value holding "%XX" (upper hex) passes through un-encoded, by design
    plain_ok = [(k, v) for k, v in headers if not re.search(r"%[0-9A-F]{2}", v)]
    assert ev.event_from_plain(ev.serialize_plain(plain_ok, body)) == (plain_ok, body)
    text = None if body is None else body.decode("utf-8", "surrogateescape")
    if text is None or text.encode("utf-8", "surrogateescape") == body:
        assert ev.event_from_json(ev.serialize_json(headers, body)) == (headers, body)
