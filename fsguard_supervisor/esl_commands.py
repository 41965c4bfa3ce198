"""The ESL client's vocabulary: the events it subscribes to, command checks, errors, stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Only what a rule reads (fsguard_workers.events.kind_of; tests/test_hot_paths.py checks
# it), plus HEARTBEAT for liveness: FreeSWITCH never writes the rest.
DEFAULT_EVENTS = [
    "CHANNEL_CREATE",
    "CHANNEL_HANGUP_COMPLETE",
    "HEARTBEAT",
    "CUSTOM",
    "sofia::register_failure",
    "sofia::register_attempt",
    "sofia::pre_register",
    "sofia::register",
    "sofia::unregister",
    "sofia::expire",
    "sofia::wrong_call_state",
]

ACL_MESSAGE = (
    "FreeSWITCH rejected this address: check apply-inbound-acl in event_socket.conf.xml"
)


class EslError(Exception):
    """Base class of the client's errors."""


class EslNotConnected(EslError):
    """No authenticated connection, or it was lost before the reply arrived."""


class EslCommandError(EslError):
    """FreeSWITCH answered the command with -ERR. `reply` holds the whole answer."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply.strip())
        self.reply = reply


class _AuthFailed(EslError):
    pass


class _AclRejected(EslError):
    pass


@dataclass
class EslStats:
    connected: bool = False
    connection_attempts: int = 0
    connection_errors: int = 0
    auth_failures: int = 0
    acl_rejections: int = 0
    malformed_frames: int = 0
    unexpected_replies: int = 0
    commands_refused: int = 0  # MAX_PENDING replies already owed
    frames_received: int = 0
    events_received: int = 0
    bytes_received: int = 0
    reconnects: int = 0
    last_error: str = ""


def check_command(command: str) -> None:
    """Reject what could end the command early or inject another (defence in depth)."""
    if not command or not command.strip():
        raise ValueError("empty ESL command")
    for ch in command:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValueError(f"control character {ch!r} in ESL command")


def subscribe_command(events: Sequence[str]) -> str:
    """`event json ...` with CUSTOM last, followed by the subclasses (token order matters)."""
    plain: list[str] = []
    subclasses: list[str] = []
    custom = False
    for name in events:
        check_command(name)
        if " " in name:
            raise ValueError(f"space in event name {name!r}")
        if name.upper() == "CUSTOM":
            custom = True
        elif "::" in name:
            subclasses.append(name)
        elif name not in plain:
            plain.append(name)
    tokens = plain
    if custom or subclasses:
        tokens = [*plain, "CUSTOM", *subclasses]
    if not tokens:
        raise ValueError("no events to subscribe to")
    return "event json " + " ".join(tokens)
