"""FreeSWITCH event bodies: text/event-plain and text/event-json (de)serialization.

Event representation: an ordered list of ``(name, value)`` pairs, duplicates kept,
array headers as the string ``ARRAY::a|:b``, plus ``body: bytes | None`` (None = the
event has no body). See reference/esl-protocol.md sections 1.2 and 1.6. The framing
of these bodies on the wire is in fsguard_supervisor.esl_protocol (which re-exports these names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

Headers = list[tuple[str, str]]


# --- plain events ----------------------------------------------------------------------

_PCT = b"%"


def _dec(value: bytes) -> str:
    if _PCT in value:
        value = unquote_to_bytes(value)
    return value.decode("utf-8", "surrogateescape")


def header_lines(block: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """(name, value) of each non-empty line of a header block (LF or CRLF), split at the
    first ':' and left raw; value None for a line without ':' (name is then the line).
    The one line splitter of the outer frame headers and of plain event bodies."""
    for raw in block.split(b"\n"):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            continue
        name, sep, value = raw.partition(b":")
        yield name, (value if sep else None)


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
    for name, value in header_lines(block):
        if value is None:
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
