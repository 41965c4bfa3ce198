"""ESL framing desync (issue 11 §1): a wrong Content-Length, a body that is not a whole
event of its type, or a header block that does not start where one must is counted and
the client reconnects. Real captures, mutated, sent by the fake FreeSWITCH over TCP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import pytest

from fsguard_supervisor.esl_client import MAX_PENDING, EslError
from fsguard_supervisor.esl_protocol import (
    MAX_EVENT_BYTES,
    FrameParser,
    ProtocolError,
    encode_frame,
)
from tests.esl_helpers import Sink, held_switch, run, subscribed, until

FIXTURES = Path(__file__).parent / "fixtures"
_CL = re.compile(rb"Content-Length: (\d+)\n")


def event_stream(name: str) -> tuple[bytes, list[int]]:
    """The capture's event frames (between the handshake and the closing replies) and
    each frame's offset."""
    data = (FIXTURES / name).read_bytes()
    data = data[data.index(b"Content-Length: "):]
    offsets: list[int] = []
    pos = 0
    while (match := _CL.match(data, pos)) is not None:
        offsets.append(pos)
        pos = data.index(b"\n\n", pos) + 2 + int(match.group(1))
    assert len(offsets) > 100 and data[pos:].startswith(b"Content-Type: command/reply")
    return data[:pos], offsets


def with_length(stream: bytes, offset: int, delta: int = 0, value: int | None = None) -> bytes:
    """`stream` with the Content-Length of the frame at `offset` changed."""
    match = _CL.match(stream, offset)
    assert match is not None
    new = value if value is not None else int(match.group(1)) + delta
    return stream[:offset] + b"Content-Length: %d\n" % new + stream[match.end():]


def bodies_parse(sink: Sink) -> bool:
    """Every body delivered is one JSON object (no empty or shifted bodies)."""
    return all(isinstance(json.loads(b), dict) for batch, _ in sink.batches for b in batch)


def expect_desync(stream: bytes, good_frames: int, full: bytes, total: int) -> None:
    """A subscribed client is sent `stream`: the good frames before the bad one arrive,
    then a reconnect, then the whole unmutated capture `full` (`total` frames) arrives
    intact on the new connection."""

    async def scenario() -> None:
        async with subscribed() as (sim, client, sink):
            await sim.send_raw(stream)
            assert await sim.wait_for_subscription(5, count=2), "the client did not reconnect"
            assert client.stats.malformed_frames == 1
            assert sum(len(b) for b, _ in sink.batches) == good_frames
            await sim.send_raw(full)
            assert await until(
                lambda: sum(len(b) for b, _ in sink.batches) == good_frames + total)
            assert bodies_parse(sink)

    run(scenario)


@pytest.mark.parametrize("capture", ["capture_json.bin", "capture_plain.bin"])
@pytest.mark.parametrize("delta", [-1, 1, -9, 40, 3000])
def test_a_wrong_content_length_is_a_desync_and_the_client_reconnects(
    capture: str, delta: int
) -> None:
    full, offsets = event_stream(capture)
    k = 25
    bad = with_length(full[: offsets[k + 40]], offsets[k], delta)
    expect_desync(bad, k, full, len(offsets))


def test_a_huge_content_length_swallows_nothing() -> None:
    full, offsets = event_stream("capture_json.bin")
    bad = with_length(full[: offsets[30]], offsets[10], value=16_000_000)
    expect_desync(bad, 10, full, len(offsets))


def _mutate_body(stream: bytes, offsets: list[int], k: int, old: bytes, new: bytes) -> bytes:
    """Replace `old` (which ends frame k) by `new`, fixing the Content-Length."""
    end = offsets[k + 1]
    assert stream[end - len(old):end] == old
    frame = stream[offsets[k]:end - len(old)] + new
    frame = with_length(frame, 0, len(new) - len(old))
    return stream[:offsets[k]] + frame + stream[end:offsets[k + 20]]


@pytest.mark.parametrize(("capture", "old", "new"), [
    ("capture_json.bin", b"}", b" "),  # not a complete JSON object
    ("capture_json.bin", b"}", b"}\n"),  # a raw newline: cJSON never writes one
    ("capture_plain.bin", b"\n\n", b"\n"),  # header lines not ending with a blank line
    ("capture_plain.bin", b"\n\n", b"\n\nX"),  # bytes after the blank line
])
def test_a_body_that_is_not_a_whole_event_of_its_type_is_a_desync(
    capture: str, old: bytes, new: bytes
) -> None:
    full, offsets = event_stream(capture)
    bad = _mutate_body(full, offsets, 12, old, new)
    expect_desync(bad, 12, full, len(offsets))


@pytest.mark.parametrize("junk", [b'x"}', b"sip:1000@h\"}", b"\x00\x01"])
def test_a_header_block_that_does_not_start_a_frame_is_a_desync(junk: bytes) -> None:
    full, offsets = event_stream("capture_json.bin")
    bad = full[: offsets[7]] + junk + full[offsets[7]: offsets[20]]
    expect_desync(bad, 7, full, len(offsets))


def test_the_unmutated_captures_are_not_desyncs() -> None:
    for capture in ("capture_json.bin", "capture_plain.bin"):
        full, offsets = event_stream(capture)
        parser = FrameParser()
        assert len(parser.feed(full)) == len(offsets)


def test_event_length_cap_is_refused_from_the_header() -> None:
    head = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % (MAX_EVENT_BYTES + 1)
    with pytest.raises(ProtocolError, match="event limit"):
        FrameParser().feed(head)  # refused before any body byte arrives


def test_unexpected_replies_are_counted_and_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with subscribed() as (sim, client, _):
            await sim.send_raw(encode_frame("api/response", b"+OK\n") * 200)
            assert await until(lambda: client.stats.unexpected_replies == 200)
            assert client.stats.malformed_frames == 0

    with caplog.at_level(logging.WARNING, logger="fsguard.esl"):
        run(scenario)
    lines = [r for r in caplog.records if "unexpected api/response" in r.getMessage()]
    assert len(lines) == 1


def test_pending_replies_are_bounded() -> None:
    async def scenario() -> None:
        sim = held_switch({"x": "y\n"})
        async with subscribed(sim) as (_, client, _):
            waiting = [asyncio.create_task(client.api("x")) for _ in range(MAX_PENDING)]
            await asyncio.sleep(0)
            with pytest.raises(EslError, match="already pending"):
                await client.api("x")
            assert client.stats.commands_refused == 1
            sim.release()
            assert await asyncio.wait_for(asyncio.gather(*waiting), 10) == ["y\n"] * MAX_PENDING
            assert await client.api("x") == "y\n"

    run(scenario)
