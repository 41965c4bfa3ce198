"""The fake FreeSWITCH (Event Socket server) used by `fsguard demo` and the tests.

- events.py: builders of realistic sofia and channel events;
- capture.py: capture files (load, rewrite source addresses);
- protocol.py: a client's session (subscriptions, api replies);
- server.py: `FakeFreeSwitch`, the asyncio server; threaded.py: `ThreadedFakeFreeSwitch`;
- sofia.py: `sofia xmlstatus gateway` replies.
"""

from __future__ import annotations

from .capture import CapturedEvent, load_capture, rewrite_source_ip
from .events import (
    CORE_UUID,
    HOSTNAME,
    SWITCH_IPV4,
    SWITCH_IPV6,
    EventLike,
    Headers,
    background_job,
    channel_create,
    channel_hangup_complete,
    heartbeat,
    pre_register,
    register,
    register_attempt,
    register_failure,
    standard_headers,
    unregister,
    wrong_call_state,
)
from .server import FakeFreeSwitch
from .sofia import SimGateway, xmlstatus_gateways
from .threaded import ThreadedFakeFreeSwitch

__all__ = [
    "CORE_UUID",
    "HOSTNAME",
    "SWITCH_IPV4",
    "SWITCH_IPV6",
    "CapturedEvent",
    "EventLike",
    "FakeFreeSwitch",
    "Headers",
    "SimGateway",
    "ThreadedFakeFreeSwitch",
    "background_job",
    "channel_create",
    "channel_hangup_complete",
    "heartbeat",
    "load_capture",
    "pre_register",
    "register",
    "register_attempt",
    "register_failure",
    "rewrite_source_ip",
    "standard_headers",
    "unregister",
    "wrong_call_state",
    "xmlstatus_gateways",
]
