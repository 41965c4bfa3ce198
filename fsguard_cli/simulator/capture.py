"""Capture files for the fake FreeSWITCH: load their events, rewrite source addresses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fsguard_supervisor.esl_protocol import (
    CT_EVENT_JSON,
    CT_EVENT_PLAIN,
    event_from_json,
    event_from_plain,
    iter_capture_frames,
)

from .events import Headers

SOURCE_IP_HEADERS = frozenset(
    {"network-ip", "network_ip", "Caller-Network-Addr", "variable_sip_network_ip",
     "variable_sip_received_ip"}
)


@dataclass
class CapturedEvent:
    headers: Headers
    body: bytes | None

    @property
    def name(self) -> str:
        return first(self.headers, "Event-Name") or ""

    @property
    def timestamp_us(self) -> int:
        value = first(self.headers, "Event-Date-Timestamp") or ""
        return int(value) if value.isdigit() else 0


def first(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def load_capture(source: str | Path | bytes) -> list[CapturedEvent]:
    """Events of a capture file (plain or json, auto-detected per frame)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    events: list[CapturedEvent] = []
    for frame in iter_capture_frames(data):
        if frame.content_type == CT_EVENT_PLAIN:
            events.append(CapturedEvent(*event_from_plain(frame.body)))
        elif frame.content_type == CT_EVENT_JSON:
            events.append(CapturedEvent(*event_from_json(frame.body)))
    return events


def rewrite_source_ip(
    headers: Sequence[tuple[str, str]], rewrite_ip: str | Mapping[str, str] | None
) -> Headers:
    """Replace the source-address headers with `rewrite_ip` (or per an old->new mapping)."""
    if rewrite_ip is None:
        return list(headers)
    out: Headers = []
    for key, value in headers:
        if key in SOURCE_IP_HEADERS:
            value = rewrite_ip if isinstance(rewrite_ip, str) else rewrite_ip.get(value, value)
        out.append((key, value))
    return out
