"""FreeSWITCH Event Socket (ESL) wire format: framing and event (de)serialization.

Pure and synchronous. `FrameParser` is the supervisor's hot path: it frames the
byte stream by the outer Content-Length and does as little work per frame as
possible (header blocks repeat, so their parse is cached).

The event body (de)serializers live in fsguard_supervisor.esl_events and are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from fsguard_supervisor.esl_events import (
    event_from_json,
    event_from_plain,
    header_lines,
    json_to_plain,
    parse_plain_event,
    plain_to_json,
    serialize_json,
    serialize_plain,
    url_encode,
)

__all__ = [
    "CT_EVENT_JSON",
    "CT_EVENT_PLAIN",
    "EVENT_CONTENT_TYPES",
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "Frame",
    "FrameParser",
    "ProtocolError",
    "check_event_body",
    "encode_frame",
    "event_frame",
    "event_from_json",
    "event_from_plain",
    "iter_capture_frames",
    "json_to_plain",
    "parse_plain_event",
    "plain_to_json",
    "serialize_json",
    "serialize_plain",
    "url_encode",
]

CT_EVENT_JSON = "text/event-json"
CT_EVENT_PLAIN = "text/event-plain"
EVENT_CONTENT_TYPES = frozenset({CT_EVENT_JSON, CT_EVENT_PLAIN, "text/event-xml"})

_MAX_CL_DIGITS = 12
# Announced lengths above these caps are a desync, refused before a byte of the body is
# waited for: a FreeSWITCH event is a few KiB (the largest in the captures: ~5 KiB), an
# api/response (e.g. `show channels` on a busy switch) can be a few MiB.
MAX_EVENT_BYTES = 1024 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
# Outer header names (Content-Type, Reply-Text, Job-UUID, ...). Anything else in a header
# block means it did not start where a frame starts.
_HEADER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CONTENT_TYPE = re.compile(r"[a-z]+/[a-z0-9.+-]+")
# Event header names inside a plain body: FreeSWITCH writes them raw (channel variables
# can be named freely), so only what a header line cannot hold is refused.
_PLAIN_HEADERS = re.compile(rb"(?:[^\x00-\x20:\x7f]+: [^\n]*\n)*[^\x00-\x20:\x7f]+: [^\n]*")


class ProtocolError(Exception):
    """The byte stream is not valid ESL framing; the connection must be resynchronised.

    Raised for a header line that is not `Name: value` with a header name, a frame
    without a Content-Type, a bad or over-the-cap Content-Length, an event frame
    without a body, and an event body that is not a complete event of its type
    (`check_event_body`): the signs of a wrong Content-Length upstream.

    `offset` is the byte offset of the bad frame in the data given to the parser
    (for `iter_capture_frames`: in the whole capture); `frames` holds the good
    frames parsed from the same `feed()` call before the error.
    """

    def __init__(self, message: str, offset: int = -1) -> None:
        super().__init__(message if offset < 0 else f"{message} (at byte offset {offset})")
        self.offset = offset
        self.frames: list[Frame] = []
        self.events: list[bytes] = []


class Frame:
    """One server message: the Content-Type, the outer headers, the body bytes.

    The outer headers are parsed lazily from the raw header block (the hot path
    only needs the Content-Type and the body).
    """

    __slots__ = ("_headers", "_raw", "body", "content_type")

    def __init__(
        self,
        content_type: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        raw_headers: bytes = b"",
    ) -> None:
        self.content_type = content_type
        self._headers = headers
        self._raw = raw_headers
        self.body = body

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Outer headers in wire order, values raw (not URL-decoded)."""
        if self._headers is None:
            self._headers = list(_parse_header_block(self._raw, -1, 1 << 62)[1])
        return self._headers

    def header(self, name: str, default: str | None = None) -> str | None:
        """First outer header named `name` (case-insensitive)."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return default

    def __repr__(self) -> str:
        return f"Frame({self.content_type!r}, {self.headers!r}, {len(self.body)} bytes)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.content_type, self.headers, self.body) == (
            other.content_type,
            other.headers,
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]


_Parsed = tuple[str, tuple[tuple[str, str], ...], int]


def _parse_header_block(block: bytes, offset: int, max_body: int) -> _Parsed:
    """Parse an outer header block (without its terminator) into (ctype, headers, clen)."""
    headers: list[tuple[str, str]] = []
    ctype = ""
    clen = -1
    for name_b, value_b in header_lines(block):
        if value_b is None:
            raise ProtocolError(f"header line without ':' ({name_b[:40]!r})", offset)
        name = name_b.decode("utf-8", "surrogateescape").strip()
        if not _HEADER_NAME.fullmatch(name):
            line = name_b + b":" + value_b
            raise ProtocolError(f"not a header name ({line[:40]!r})", offset)
        value = value_b.lstrip(b" \t").decode("utf-8", "surrogateescape")
        headers.append((name, value))
        lname = name.lower()
        if lname == "content-length":
            text = value.strip()
            if not (text.isascii() and text.isdigit()) or len(text) > _MAX_CL_DIGITS:
                raise ProtocolError(f"bad Content-Length {text[:20]!r}", offset)
            clen = int(text)
            if clen > max_body:
                raise ProtocolError(f"Content-Length {clen} over the limit {max_body}", offset)
        elif lname == "content-type" and not ctype:
            ctype = value.strip()
    if not _CONTENT_TYPE.fullmatch(ctype):
        raise ProtocolError(f"frame without a valid Content-Type ({block[:40]!r})", offset)
    if ctype in EVENT_CONTENT_TYPES:
        if clen <= 0:
            raise ProtocolError(f"{ctype} frame without a body", offset)
        if clen > MAX_EVENT_BYTES:
            raise ProtocolError(f"Content-Length {clen} over the event limit", offset)
    return ctype, tuple(headers), clen


def check_event_body(ctype: str, body: bytes) -> str | None:
    """Why `body` is not one whole event of type `ctype` (None: it is, as far as framing
    can tell). Cheap enough for every frame; decoding is the workers' job.

    text/event-json: cJSON's unformatted output, one object, `{...}` with no raw newline
    (cJSON escapes control characters inside strings). text/event-plain: header lines
    ending with a blank line, or with `Content-Length: N` and a blank line before exactly
    N body bytes.
    """
    if ctype == CT_EVENT_JSON:
        if body[:1] != b"{" or body[-1:] != b"}":
            return "text/event-json body is not one JSON object"
        if b"\n" in body:
            return "raw newline in a text/event-json body"
        return None
    if ctype == CT_EVENT_PLAIN:
        end = body.find(b"\n\n")
        if end < 0:
            return "text/event-plain body without its closing blank line"
        block = body[:end]
        if end + 2 != len(body):
            last = block.rpartition(b"\n")[2]
            if not last.startswith(b"Content-Length: ") or not last[16:].isdigit():
                return "text/event-plain body continues after its blank line"
            if int(last[16:]) != len(body) - end - 2:
                return "text/event-plain inner Content-Length does not match"
        if not _PLAIN_HEADERS.fullmatch(block):
            return f"text/event-plain header lines are malformed ({block[:40]!r}...)"
        return None
    return None


# Event frames ("Content-Length: N\nContent-Type: X") skip the generic header parse.
_CL_PREFIX = b"Content-Length: "
_FAST_TAIL = {
    b"Content-Type: " + ct.encode(): ct for ct in (CT_EVENT_JSON, CT_EVENT_PLAIN)
}


class FrameParser:
    """Incremental ESL framer: `feed()` bytes as they arrive, get complete frames."""

    __slots__ = ("_buf", "_consumed", "_need", "max_body_bytes", "max_header_bytes")

    def __init__(self, max_header_bytes: int = 65536, max_body_bytes: int = MAX_BODY_BYTES):
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._need = 0  # buffered bytes needed before a parse can make progress
        self._consumed = 0  # stream offset of the buffer start (for error messages)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add `data`; return every frame completed by it, in order.

        Raises ProtocolError (with `.frames` = frames completed before the bad one);
        after an error the parser must be discarded.
        """
        frames: list[Frame] = []
        self._feed(data, frames, None)
        return frames

    def feed_events(self, data: bytes) -> tuple[list[bytes], list[Frame]]:
        """Like `feed`, but text/event-json bodies come back apart, without Frame objects.

        Returns (json event bodies, every other frame). Order between the two lists is
        lost, which is fine for replies vs events (the server orders nothing between
        them). On ProtocolError, `.frames` holds the other frames and `.events` the
        event bodies completed before the bad frame.
        """
        frames: list[Frame] = []
        events: list[bytes] = []
        self._feed(data, frames, events)
        return events, frames

    def _feed(self, data: bytes, frames: list[Frame], events: list[bytes] | None) -> None:
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            work = bytes(buf)
            buf.clear()
        else:
            work = data if type(data) is bytes else bytes(data)
        try:
            pos, need = self._scan(work, frames, events)
        except ProtocolError as exc:
            exc.frames = frames
            exc.events = events if events is not None else []
            raise
        if pos < len(work):
            buf += memoryview(work)[pos:]
            self._need = need
        self._consumed += pos

    def _scan(
        self, work: bytes, frames: list[Frame], events: list[bytes] | None
    ) -> tuple[int, int]:
        """Parse frames from `work`; return (end of the last whole frame, bytes needed)."""
        pos = 0
        n = len(work)
        max_h = self.max_header_bytes
        max_b = self.max_body_bytes
        find = work.find
        append = frames.append
        ev_append = events.append if events is not None else None
        while pos < n:
            hend = find(b"\n\n", pos)
            if hend >= 0:
                crlf = find(b"\n\r\n", pos, hend)
                if crlf >= 0:
                    hend, bstart = crlf, crlf + 3
                else:
                    bstart = hend + 2
            else:
                crlf = find(b"\n\r\n", pos)
                if crlf < 0:
                    if n - pos > max_h:
                        raise ProtocolError(
                            f"header block over {max_h} bytes without terminator",
                            self._consumed + pos,
                        )
                    return pos, 0
                hend, bstart = crlf, crlf + 3
            if hend - pos > max_h:
                raise ProtocolError(f"header block over {max_h} bytes", self._consumed + pos)
            block = work[pos:hend]
            ctype = None
            if block.startswith(_CL_PREFIX):
                nl = block.find(b"\n", 16)
                if nl > 0:
                    ctype = _FAST_TAIL.get(block[nl + 1 :])
                    digits = block[16:nl]
                    if ctype is not None and digits.isdigit() and len(digits) <= _MAX_CL_DIGITS:
                        clen = int(digits)
                        if clen > MAX_EVENT_BYTES or clen <= 0:
                            ctype = None  # the generic path raises
                    else:
                        ctype = None
            if ctype is None:
                if not block.strip():  # stray blank line(s) between frames
                    pos = bstart
                    continue
                ctype, _, clen = _parse_header_block(block, self._consumed + pos, max_b)
            if clen > 0:
                end = bstart + clen
                if end > n:
                    return pos, end - pos
                body = work[bstart:end]
                pos = end
            else:
                body = b""
                pos = bstart
            if ctype == CT_EVENT_JSON:
                if body[0] != 0x7B or body[-1] != 0x7D or b"\n" in body:  # {...}
                    raise ProtocolError(
                        check_event_body(ctype, body) or "bad event", self._consumed + bstart
                    )
                if ev_append is not None:
                    ev_append(body)
                    continue
            elif ctype == CT_EVENT_PLAIN:
                why = check_event_body(ctype, body)
                if why is not None:
                    raise ProtocolError(why, self._consumed + bstart)
            append(Frame(ctype, None, body, block))
        return pos, 0


def iter_capture_frames(data: bytes) -> Iterator[Frame]:
    """Frames of a whole capture file.

    Yields every good frame, then raises ProtocolError (with `.offset`) at a corrupt
    frame or at a truncated final frame.
    """
    parser = FrameParser()
    frames: list[Frame] = []
    try:
        pos, _ = parser._scan(bytes(data), frames, None)
    except ProtocolError as exc:
        yield from frames
        raise exc from None
    yield from frames
    if pos < len(data):
        raise ProtocolError("truncated frame at end of capture", pos)


def encode_frame(
    content_type: str,
    body: bytes = b"",
    extra_headers: Sequence[tuple[str, str]] = (),
    *,
    length_first: bool = False,
) -> bytes:
    """Build one server frame. Events put Content-Length first, as FreeSWITCH does."""
    lines: list[str] = []
    if body and length_first:
        lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Content-Type: {content_type}")
    if body and not length_first:
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{k}: {v}" for k, v in extra_headers)
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape") + body


def event_frame(fmt: str, headers: Sequence[tuple[str, str]], body: bytes | None = None) -> bytes:
    """A whole event frame in `fmt` ("plain" or "json"), Content-Length first."""
    if fmt == "json":
        return encode_frame(CT_EVENT_JSON, serialize_json(headers, body), length_first=True)
    if fmt == "plain":
        return encode_frame(CT_EVENT_PLAIN, serialize_plain(headers, body), length_first=True)
    raise ValueError(f"unsupported event format {fmt!r}")
