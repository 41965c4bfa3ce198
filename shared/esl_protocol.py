"""FreeSWITCH Event Socket (ESL) wire format: framing and event (de)serialization.

Pure and synchronous. `FrameParser` is the supervisor's hot path: it frames the
byte stream by the outer Content-Length and does as little work per frame as
possible (header blocks repeat, so their parse is cached).

Event representation used by the (de)serializers: an ordered list of
``(name, value)`` pairs, duplicates kept, array headers as the string
``ARRAY::a|:b``, plus ``body: bytes | None`` (None = the event has no body).
See reference/esl-protocol.md sections 1.2 and 1.6.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "CT_EVENT_JSON",
    "CT_EVENT_PLAIN",
    "EVENT_CONTENT_TYPES",
    "Frame",
    "FrameParser",
    "ProtocolError",
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

Headers = list[tuple[str, str]]

CT_EVENT_JSON = "text/event-json"
CT_EVENT_PLAIN = "text/event-plain"
EVENT_CONTENT_TYPES = frozenset({CT_EVENT_JSON, CT_EVENT_PLAIN, "text/event-xml"})

_MAX_CL_DIGITS = 12
_CACHE_MAX = 4096


class ProtocolError(Exception):
    """The byte stream is not valid ESL framing; the connection must be resynchronised.

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
    for raw in block.split(b"\n"):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            continue
        name_b, sep, value_b = raw.partition(b":")
        if not sep:
            raise ProtocolError(f"header line without ':' ({raw[:40]!r})", offset)
        name = name_b.decode("utf-8", "surrogateescape").strip()
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
    return ctype, tuple(headers), clen


# Event frames ("Content-Length: N\nContent-Type: X") skip the generic header parse.
_CL_PREFIX = b"Content-Length: "
_FAST_TAIL = {
    b"Content-Type: " + ct.encode(): ct for ct in (CT_EVENT_JSON, CT_EVENT_PLAIN)
}


class FrameParser:
    """Incremental ESL framer: `feed()` bytes as they arrive, get complete frames."""

    __slots__ = ("_buf", "_consumed", "_need", "max_body_bytes", "max_header_bytes")

    def __init__(self, max_header_bytes: int = 65536, max_body_bytes: int = 16 * 1024 * 1024):
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
                        if clen > max_b:
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
            if ev_append is not None and ctype == CT_EVENT_JSON:
                ev_append(body)
            else:
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


# --- plain events ----------------------------------------------------------------------

_PCT = b"%"


def _dec(value: bytes) -> str:
    if _PCT in value:
        value = unquote_to_bytes(value)
    return value.decode("utf-8", "surrogateescape")


def parse_plain_event(body: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Split a text/event-plain body into (decoded header multimap, inner body).

    Values are percent-decoded to bytes (``+`` stays ``+``), then decoded as UTF-8
    with surrogateescape, so any byte survives and can be re-encoded exactly.
    """
    end = body.find(b"\n\n")
    if end < 0:
        block, inner = body, b""
    else:
        block, inner = body[:end], body[end + 2 :]
    headers: list[tuple[str, str]] = []
    for raw in block.split(b"\n"):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            continue
        name, sep, value = raw.partition(b":")
        if not sep:
            continue  # libesl skips such lines too
        if value.startswith(b" "):
            value = value[1:]
        headers.append((name.decode("utf-8", "surrogateescape"), _dec(value)))
    return headers, inner


def event_from_plain(body: bytes) -> tuple[Headers, bytes | None]:
    """Plain event body -> (headers without the serializer's Content-Length, body|None)."""
    headers, inner = parse_plain_event(body)
    if headers and headers[-1][0] == "Content-Length":
        headers.pop()
        return headers, inner
    return headers, None


# switch_url_encode (switch_utils.c): bytes < 0x20, > 0x7E and SWITCH_URL_UNSAFE become
# %XX upper-case, except "%" followed by two upper-case hex digits (pass-through).
_UNSAFE = b'\r\n #%&+:;<=>?@[\\]^`{|}"'
_ENC_TABLE: list[bytes] = [
    (b"%%%02X" % i) if (i < 0x20 or i > 0x7E or i in _UNSAFE) else bytes([i]) for i in range(256)
]
_NEEDS_ENC = re.compile(b"[^" + re.escape(bytes(
    i for i in range(0x20, 0x7F) if i not in _UNSAFE)) + b"]")
_HEX_UP = b"0123456789ABCDEF"


def url_encode(value: bytes) -> bytes:
    """FreeSWITCH's switch_url_encode (double_encode = FALSE)."""
    if not _NEEDS_ENC.search(value):
        return value
    out: list[bytes] = []
    n = len(value)
    table = _ENC_TABLE
    for i, b in enumerate(value):
        if b == 0x25 and i + 2 < n and value[i + 1] in _HEX_UP and value[i + 2] in _HEX_UP:
            out.append(b"%")
        else:
            out.append(table[b])
    return b"".join(out)


def _enc_str(value: str) -> bytes:
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def serialize_plain(headers: Sequence[tuple[str, str]], body: bytes | None = None) -> bytes:
    """Inner text/event-plain body, as switch_event_serialize() writes it."""
    parts: list[bytes] = []
    for name, value in headers:
        enc = url_encode(_enc_str(value)) if value else b"_undef_"
        parts.append(_enc_str(name) + b": " + enc + b"\n")
    if body is not None:
        parts.append(b"Content-Length: %d\n\n" % len(body))
        parts.append(body)
    else:
        parts.append(b"\n")
    return b"".join(parts)


# --- JSON events -----------------------------------------------------------------------

_JSON_ESC = re.compile(b'[\\x00-\\x1f"\\\\]')
_JSON_SHORT = {0x22: b'\\"', 0x5C: b"\\\\", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n",
               0x0D: b"\\r", 0x09: b"\\t"}


def _json_esc_one(m: re.Match[bytes]) -> bytes:
    c = m.group()[0]
    return _JSON_SHORT.get(c) or b"\\u%04x" % c


def _json_str(value: str) -> bytes:
    raw = _enc_str(value)
    if _JSON_ESC.search(raw):
        raw = _JSON_ESC.sub(_json_esc_one, raw)
    return b'"' + raw + b'"'


def _json_value(value: str) -> bytes:
    if value.startswith("ARRAY::"):
        items = value[7:].split("|:")
        return b"[" + b",".join(_json_str(v) for v in items) + b"]"
    return _json_str(value)


def serialize_json(headers: Sequence[tuple[str, str]], body: bytes | None = None) -> bytes:
    """text/event-json body as cJSON_PrintUnformatted writes it (duplicate keys kept)."""
    members = [_json_str(k) + b":" + _json_value(v) for k, v in headers]
    if body is not None:
        members.append(b'"Content-Length":"%d"' % len(body))
        members.append(b'"_body":' + _json_str(body.decode("utf-8", "surrogateescape")))
    return b"{" + b",".join(members) + b"}"


def _pairs(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return pairs


def event_from_json(body: bytes) -> tuple[Headers, bytes | None]:
    """JSON event body -> (headers, body|None); arrays become ``ARRAY::a|:b`` strings.

    Invalid UTF-8 (cJSON copies bytes >= 0x80 raw) survives via surrogateescape.
    Raises ValueError for non-JSON or a non-object.
    """
    text = bytes(body).decode("utf-8", "surrogateescape")
    obj = json.loads(text, object_pairs_hook=_pairs)
    if not isinstance(obj, list):
        raise ValueError("JSON event is not an object")
    headers: Headers = []
    ev_body: bytes | None = None
    for key, value in obj:
        if key == "_body":
            ev_body = _enc_str(str(value))
            if headers and headers[-1][0] == "Content-Length":
                headers.pop()
            continue
        if isinstance(value, list):
            headers.append((key, "ARRAY::" + "|:".join(str(v) for v in value)))
        elif isinstance(value, str):
            headers.append((key, value))
        else:
            headers.append((key, json.dumps(value)))
    return headers, ev_body


def plain_to_json(body: bytes) -> bytes:
    """Convert a text/event-plain body into the text/event-json body FreeSWITCH sends."""
    return serialize_json(*event_from_plain(body))


def json_to_plain(body: bytes) -> bytes:
    """Convert a text/event-json body into the text/event-plain body FreeSWITCH sends."""
    return serialize_plain(*event_from_json(body))


def event_frame(fmt: str, headers: Sequence[tuple[str, str]], body: bytes | None = None) -> bytes:
    """A whole event frame in `fmt` ("plain" or "json"), Content-Length first."""
    if fmt == "json":
        return encode_frame(CT_EVENT_JSON, serialize_json(headers, body), length_first=True)
    if fmt == "plain":
        return encode_frame(CT_EVENT_PLAIN, serialize_plain(headers, body), length_first=True)
    raise ValueError(f"unsupported event format {fmt!r}")
