"""Repair of event bodies that FreeSWITCH's JSON writer left invalid.

FreeSWITCH copies SIP header bytes into its JSON events as they arrive: cJSON escapes
quotes, backslashes and ASCII controls but passes bytes >= 0x80 through unchecked, so a
header can hold invalid UTF-8 or overlong sequences. A buggy proxy or a forger on the
ESL link can send worse (raw controls, lone surrogate escapes, broken structure). None of
that may hide the event's source address from the rules, so a body the fast decoder
refuses goes through these steps, cheapest first:

1. ``sanitize``: invalid UTF-8 and overlong sequences become U+FFFD, raw ASCII controls
   become spaces (outside strings they were whitespace anyway), escaped lone surrogates
   become ``\\ufffd``; the JSON structure is untouched.
2. ``salvage``: when the structure itself is broken, the top-level ``"key": "string"``
   and ``"key": ["string", ...]`` members are picked out one by one, last one wins (as
   in the decoder), so a stray quote in one header costs that header, not the event.

Limits apply before any of this: a body over ``MAX_BODY`` bytes or nested deeper than
``MAX_DEPTH`` is refused (FreeSWITCH events are one flat object whose values are strings
or arrays of strings: depth 2).
"""

from __future__ import annotations

import re
from typing import Any

MAX_BODY = 1 << 20  # the supervisor's frame cap; a real event is a few KB
MAX_DEPTH = 8
# Fewer brackets than this cannot nest deeper than MAX_DEPTH: skip the scan.
_BRACKETS_BEFORE_SCAN = 2 * MAX_DEPTH

_CONTROLS = {i: " " for i in range(0x20)}
_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
# "key" : "value"   or   "key" : ["v1", "v2"]   (strings with escapes; spaces allowed)
_STR = r'"((?:[^"\\]|\\.)*)"'
_MEMBER = re.compile(
    _STR + r"\s*:\s*(?:" + _STR + r"|\[\s*((?:" + r'"(?:[^"\\]|\\.)*"' + r"\s*,?\s*)*)\])",
    re.DOTALL,
)
_ITEM = re.compile(_STR, re.DOTALL)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n",
                   "r": "\r", "t": "\t"}


class Refused(Exception):
    """The body breaks a limit (size or depth); its reason is the message."""


def needs_checks(body: bytes) -> bool:
    """True when a body is big or bracket-rich enough that `check_limits` must see it."""
    return len(body) > MAX_BODY or body.count(b"{") + body.count(b"[") >= _BRACKETS_BEFORE_SCAN


def check_limits(body: bytes) -> None:
    """Raise Refused for a body over the size or depth limit. Cheap for real events."""
    if len(body) > MAX_BODY:
        raise Refused(f"body of {len(body)} bytes is over {MAX_BODY}")
    if not needs_checks(body):
        return
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub(b'""', body)):
        if bracket in (b"{", b"["):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    raise Refused(f"nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def sanitize(body: bytes) -> str:
    """The body as valid JSON text, as far as bytes inside strings can spoil it."""
    text = body.decode("utf-8", errors="replace").translate(_CONTROLS)
    if "\\u" in text:
        text = _LONE_SURROGATE.sub(r"\\ufffd", text)
    return text


def _unescape(raw: str) -> str:
    def one(m: re.Match[str]) -> str:
        esc = m.group(1)
        if len(esc) == 5:
            code = int(esc[1:], 16)
            return "\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)
        return _SIMPLE_ESCAPES.get(esc, esc)

    return _ESCAPE.sub(one, raw) if "\\" in raw else raw


def salvage(text: str) -> dict[str, Any]:
    """The top-level string members that can still be read from broken JSON text."""
    out: dict[str, Any] = {}
    for m in _MEMBER.finditer(text):
        key = _unescape(m.group(1))
        if m.group(2) is not None:
            out[key] = _unescape(m.group(2))
        else:
            out[key] = [_unescape(item) for item in _ITEM.findall(m.group(3) or "")]
    return out
