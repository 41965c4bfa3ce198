"""Messages exchanged between fsguard processes (MessagePack via msgspec).

Every message is a tagged Struct, so a receiver decodes with the `Message`
union and dispatches on type. `PROTOCOL_VERSION` travels in every control
request so a mixed-version tree fails loudly instead of misreading bytes.

Event traffic (supervisor -> worker) is *not* MessagePack: it is the raw
ESL JSON bodies, see `EventBatch` framing helpers below.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

PROTOCOL_VERSION = 1


class BanDecision(msgspec.Struct, tag="ban", kw_only=True):
    """A worker's (or the API's) request to drop an address in the kernel."""

    id: str  # unique per decision ("<worker>-<pid>-<seq>"); the firewall is idempotent on it
    ip: str  # normalized address, or a CIDR prefix for aggregated IPv6
    rule: str  # e.g. "failed_auth"
    reason: str  # human reason, Go strings where the Go program had one
    duration: float  # seconds; 0 = permanent
    user: str = ""
    user_agent: str = ""
    evidence_count: int = 0
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)
    source: str = "rule"  # rule | manual | upstream
    event_ts: float = 0.0  # wall time the threshold event was read from ESL (latency metric)
    # ban stage metrics: FreeSWITCH's Event-Date-Timestamp of the threshold event and the
    # wall time the worker decided (0.0: unknown, e.g. manual bans)
    fs_ts: float = 0.0
    decided_ts: float = 0.0
    worker: int = -1


class DecisionAck(msgspec.Struct, tag="ack", kw_only=True):
    """Firewall -> worker: the outcome of a decision. ok=True only once the kernel holds
    the ban. ok=False keeps it unacknowledged (the worker re-sends), unless `final`:
    nothing more will happen to it (it expired before the kernel took it)."""

    id: str
    ok: bool
    error: str = ""
    final: bool = False


class KillCall(msgspec.Struct, tag="kill", kw_only=True):
    """Worker -> supervisor: tear a call down with `api uuid_kill <uuid>`."""

    uuid: str
    reason: str


class ListChange(msgspec.Struct, tag="list", kw_only=True):
    """Firewall -> workers broadcast (PUB/SUB): a whitelist/blacklist entry changed."""

    list: str  # "whitelist" | "blacklist"
    op: str  # "add" | "remove"
    ip: str
    expires: float = 0.0  # wall time; 0 = permanent


class ControlRequest(msgspec.Struct, tag="req", kw_only=True):
    """REQ/REP control call. `op` names the operation; `args` its parameters."""

    op: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    version: int = PROTOCOL_VERSION


class ControlReply(msgspec.Struct, tag="rep", kw_only=True):
    ok: bool
    data: Any = None
    error: str = ""
    status: int = 200  # HTTP-like status the API may forward (400, 404, 503 ...)


Message = BanDecision | DecisionAck | KillCall | ListChange | ControlRequest | ControlReply

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes) -> Message:
    """Decode any message; raises msgspec.DecodeError / ValidationError on bad input."""
    return _decoder.decode(data)


# --- supervisor -> worker event batches -------------------------------------------
#
# One ZeroMQ message carries every event of one shard read in one pass:
#   8-byte big-endian float (wall time the bytes were read from ESL) + bodies joined by b"\n".
# ESL JSON bodies never contain a raw LF (cJSON escapes control characters), so LF is a
# safe separator. Batching amortises the per-message cost of ZeroMQ.

_TS = struct.Struct(">d")
EVENT_SEPARATOR = b"\n"


def pack_event_batch(read_ts: float, bodies: list[bytes]) -> bytes:
    return _TS.pack(read_ts) + EVENT_SEPARATOR.join(bodies)


def unpack_event_batch(data: bytes) -> tuple[float, list[bytes]]:
    if len(data) < _TS.size:
        raise ValueError("event batch shorter than its timestamp")
    (ts,) = _TS.unpack_from(data)
    payload = data[_TS.size :]
    return ts, (payload.split(EVENT_SEPARATOR) if payload else [])
