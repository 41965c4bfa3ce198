"""Decoding of raw ESL JSON event bodies into the few fields the rules read.

One msgspec Struct, fields renamed to the wire keys. Every other key is skipped
by msgspec without building Python objects, which is what makes this several
times faster than `json.loads` (see bench/bench_engine.py).

Wire facts this relies on (reference/esl-protocol.md 1.6):
- all values are JSON strings; a header that FreeSWITCH turned into an ARRAY
  (any value starting with ``ARRAY::``, attacker-controlled ones included)
  arrives as a JSON array of strings, so every attacker-controlled field
  accepts ``str | list[str]`` (otherwise a User-Agent of ``ARRAY::x|:y`` would
  make the event undecodable and evade every rule);
- keys can repeat (``profile-name``); msgspec keeps the last one, which is
  also the genuine one when a forger prepends headers (2.8);
- cJSON copies bytes >= 0x80 raw, so the text may be invalid UTF-8.
"""

from __future__ import annotations

import enum
import logging

import msgspec

from shared.logs import LogRateLimiter, escape

from . import repair

log = logging.getLogger(__name__)

Text = str | list[str]


def text(value: Text) -> str:
    """A header value as one string (array items joined by a space)."""
    if isinstance(value, str):
        return value
    return " ".join(value)


class Event(msgspec.Struct, kw_only=True, gc=False):
    """The fields of an ESL event that fsguard's rules read."""

    event_name: str = msgspec.field(name="Event-Name", default="")
    event_subclass: str = msgspec.field(name="Event-Subclass", default="")
    # source address (transport level, not forgeable by the SIP peer)
    network_ip_dash: str = msgspec.field(name="network-ip", default="")
    network_ip_us: str = msgspec.field(name="network_ip", default="")
    caller_network_addr: str = msgspec.field(name="Caller-Network-Addr", default="")
    sip_network_ip: str = msgspec.field(name="variable_sip_network_ip", default="")
    # attacker-controlled values
    user_agent: Text = msgspec.field(name="user-agent", default="")
    sip_user_agent: Text = msgspec.field(name="variable_sip_user_agent", default="")
    to_user: Text = msgspec.field(name="to-user", default="")
    to_host: Text = msgspec.field(name="to-host", default="")
    from_user: Text = msgspec.field(name="from-user", default="")
    from_host: Text = msgspec.field(name="from-host", default="")
    username: Text = msgspec.field(name="username", default="")
    from_user_us: Text = msgspec.field(name="from_user", default="")
    call_id: Text = msgspec.field(name="call-id", default="")
    destination: Text = msgspec.field(name="Caller-Destination-Number", default="")
    sip_from_host: Text = msgspec.field(name="variable_sip_from_host", default="")
    sip_from_user: Text = msgspec.field(name="variable_sip_from_user", default="")
    caller_username: Text = msgspec.field(name="Caller-Username", default="")
    # set by FreeSWITCH itself
    auth_result: str = msgspec.field(name="auth-result", default="")
    registration_type: str = msgspec.field(name="registration-type", default="")
    profile_name: str = msgspec.field(name="profile-name", default="")
    unique_id: str = msgspec.field(name="Unique-ID", default="")
    caller_context: str = msgspec.field(name="Caller-Context", default="")
    sofia_profile: str = msgspec.field(name="variable_sofia_profile_name", default="")
    sip_authorized: str = msgspec.field(name="variable_sip_authorized", default="")
    hangup_cause: str = msgspec.field(name="Hangup-Cause", default="")
    calling_file: str = msgspec.field(name="Event-Calling-File", default="")
    calling_function: str = msgspec.field(name="Event-Calling-Function", default="")
    # microseconds since the epoch when FreeSWITCH created the event (ban stage metrics)
    date_ts: str = msgspec.field(name="Event-Date-Timestamp", default="")
    # present only on events injected with `sendevent`
    command: str | list[str] | None = msgspec.field(name="Command", default=None)
    event_uuid: str | list[str] | None = msgspec.field(name="Event-UUID", default=None)

    def source_ip(self) -> str:
        """The source-address header, searched in shared.iputil.SOURCE_IP_KEYS order."""
        return (
            self.network_ip_dash
            or self.network_ip_us
            or self.caller_network_addr
            or self.sip_network_ip
        )


def freeswitch_time(ev: Event) -> float:
    """Event-Date-Timestamp in seconds since the epoch, or 0.0 when absent or not a number."""
    value = ev.date_ts
    if not value.isdigit() or len(value) > 20:
        return 0.0
    return int(value) / 1_000_000


class HostEvent(Event, kw_only=True, gc=False):
    """`Event` plus the CHANNEL_CREATE request host, decoded only when the bare_ip rule
    runs (every decoded field costs on every event)."""

    sip_req_host: Text = msgspec.field(name="variable_sip_req_host", default="")


class Kind(enum.IntEnum):
    """Event types the rules act on."""

    OTHER = 0
    PRE_REGISTER = 1
    REGISTER_ATTEMPT = 2
    REGISTER = 3
    REGISTER_FAILURE = 4
    WRONG_CALL_STATE = 5
    CHANNEL_CREATE = 6
    UNREGISTER = 7
    HANGUP = 8  # CHANNEL_HANGUP_COMPLETE


_SUBCLASS_KIND: dict[str, Kind] = {
    "sofia::pre_register": Kind.PRE_REGISTER,
    "sofia::register_attempt": Kind.REGISTER_ATTEMPT,
    "sofia::register": Kind.REGISTER,
    "sofia::register_failure": Kind.REGISTER_FAILURE,
    "sofia::wrong_call_state": Kind.WRONG_CALL_STATE,
    "sofia::unregister": Kind.UNREGISTER,
    "sofia::expire": Kind.UNREGISTER,  # the registration ran out: same as unregistering
}


# Module constants: `Kind.X` goes through EnumType.__getattr__ (~75 ns on 3.11) on every event.
_OTHER = Kind.OTHER
_CHANNEL_CREATE = Kind.CHANNEL_CREATE
_HANGUP = Kind.HANGUP
_WRONG_CALL_STATE = Kind.WRONG_CALL_STATE


def kind_of(ev: Event) -> Kind:  # maybe_relevant mirrors this on the raw bytes
    name = ev.event_name
    if name == "CUSTOM":
        return _SUBCLASS_KIND.get(ev.event_subclass, _OTHER)
    if name == "CHANNEL_CREATE":
        return _CHANNEL_CREATE
    if name == "CHANNEL_HANGUP_COMPLETE":
        return _HANGUP
    return _OTHER


def relevant_label(label: bytes) -> bool:
    """maybe_relevant for a body whose label (the worker's event_label: Event-Name, or
    the Event-Subclass of a CUSTOM event) is already known: no second scan."""
    return label in _RELEVANT_LABELS


_NAME_KEY = b'"Event-Name":"'
_SUBCLASS_KEY = b'"Event-Subclass":"'
# keep in step with kind_of (tests/test_hot_paths.py checks both on the real captures)
_RELEVANT_SUBCLASSES = frozenset(name.encode() for name in _SUBCLASS_KIND)
_RELEVANT_NAMES = frozenset((b"CHANNEL_CREATE", b"CHANNEL_HANGUP_COMPLETE"))
_RELEVANT_LABELS = _RELEVANT_SUBCLASSES | _RELEVANT_NAMES


def maybe_relevant(body: bytes) -> bool:
    """Cheap byte pre-filter: can this body be an event the rules act on (kind_of)?

    Reads the Event-Name key (FreeSWITCH writes it among the first headers, so the
    search stops early instead of scanning a 4 KB CHANNEL_* body for "sofia::"), and for
    CUSTOM the Event-Subclass. Inside a JSON string a quote is escaped, so the key can
    only be a key. A body without the key goes to the full decode. The one event this
    can call irrelevant while the decoder would not is one whose Event-Name key repeats
    (msgspec keeps the last) - only a forged `sendevent` event does that, and those are
    dropped anyway.
    """
    i = body.find(_NAME_KEY)
    if i < 0:
        return True
    start = i + len(_NAME_KEY)
    name = body[start : body.find(b'"', start, start + 32)]
    if name in _RELEVANT_NAMES:
        return True
    if name != b"CUSTOM":
        return False
    j = body.find(_SUBCLASS_KEY)
    if j < 0:
        return False
    start = j + len(_SUBCLASS_KEY)
    return body[start : body.find(b'"', start, start + 64)] in _RELEVANT_SUBCLASSES


_FORGED_FILE = "mod_event_socket.c"
_FORGED_FUNCTION = "parse_command"
# Standard headers a forger who sends their own copy duplicates (esl-protocol.md 2.8).
# Inside a JSON string a quote is escaped, so these byte strings only match keys.
_DUP_KEYS = (b'"Event-Calling-File":', b'"Core-UUID":')


def is_forged(ev: Event, body: bytes) -> bool:
    """True for an event injected through ESL `sendevent` (or one that looks like it)."""
    if ev.command is not None or ev.event_uuid is not None:
        return True
    if ev.calling_file == _FORGED_FILE or ev.calling_function == _FORGED_FUNCTION:
        return True
    for key in _DUP_KEYS:
        first = body.find(key)
        if first >= 0 and body.find(key, first + len(key)) >= 0:
            return True
    return False


class DecodeFailure(Exception):
    """The body is not a JSON object of the expected shape, even after repair."""


class EventDecoder:
    """Decodes bodies, repairing what FreeSWITCH's JSON writer can leave invalid.

    `decode_fast` is the bare msgspec decode for the hot path; on any exception the
    caller hands the body to `decode`, which applies the limits and the repairs of
    `fsguard_workers.repair` and counts what each body needed.
    """

    def __init__(self, event_type: type[Event] = Event) -> None:
        self._type = event_type
        self._decoder = msgspec.json.Decoder(event_type)
        self.decode_fast = self._decoder.decode
        self.invalid_utf8 = 0  # repaired by sanitizing (invalid UTF-8, controls, surrogates)
        self.salvaged = 0  # structure broken: members picked out one by one
        self.refused = 0  # over the size or depth limit
        self._log_limiter = LogRateLimiter(60.0)

    def decode(self, body: bytes) -> Event:
        """Decode one body. Raises DecodeFailure on anything unusable; never anything else."""
        try:
            repair.check_limits(body)
        except repair.Refused as exc:
            self.refused += 1
            self._log_failure(str(exc), body)
            raise DecodeFailure(str(exc)) from None
        try:
            return self._decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass
        text = repair.sanitize(body)
        try:
            ev = self._decoder.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass
        else:
            self.invalid_utf8 += 1
            return ev
        members = repair.salvage(text)
        reason = "not a JSON event object, and no Event-Name could be salvaged"
        if "Event-Name" in members:
            try:
                ev = msgspec.convert(members, self._type)
            except msgspec.ValidationError as exc:
                reason = f"salvaged members do not form an event: {exc}"
            else:
                self.salvaged += 1
                return ev
        self._log_failure(reason, body)
        raise DecodeFailure(reason)

    def _log_failure(self, reason: str, body: bytes) -> None:
        if self._log_limiter.allow("undecodable"):
            suppressed = sum(self._log_limiter.take_suppressed().values())
            log.warning(
                "undecodable event dropped (%s; %d more since the last such line): %s",
                reason, suppressed, escape(body[:160], max_len=160),
            )


def user_of(kind: Kind, ev: Event) -> str:
    """The account an event is about (headers are swapped in sofia events)."""
    if kind is _CHANNEL_CREATE or kind is _HANGUP:
        return text(ev.caller_username) or text(ev.sip_from_user)
    if kind is _WRONG_CALL_STATE:
        return text(ev.from_user_us)
    return text(ev.username) or text(ev.to_user)
