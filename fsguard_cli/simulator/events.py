"""Builders of realistic sofia and channel events for the fake FreeSWITCH.

Each returns the event's headers in ESL order (Event-Subclass first for CUSTOM), with
the fields FreeSWITCH 1.10 sends (reference/esl-protocol.md); the server serializes them
in each client's subscribed format.
"""

from __future__ import annotations

import itertools
import time
import uuid as uuidlib
from collections.abc import Sequence

Headers = list[tuple[str, str]]
EventLike = Headers | tuple[Sequence[tuple[str, str]], bytes]

# --- event builders ----------------------------------------------------------------

CORE_UUID = str(uuidlib.uuid4())
HOSTNAME = "fsguard-sim"
SWITCH_IPV4 = "192.0.2.10"
SWITCH_IPV6 = "2001:db8::10"
_sequence = itertools.count(1000)
# `api status`, and the Up-Time of HEARTBEAT events
STATUS_TEXT = (
    "UP 0 years, 0 days, 1 hour, 2 minutes, 3 seconds, 4 milliseconds, 5 microseconds\n"
    "FreeSWITCH (Version 1.10.12-release fsguard-simulator 64bit) is ready\n"
    "0 session(s) since startup\n0 session(s) - peak 0, last 5min 0 \n"
    "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n1000 session(s) max\n"
    "min idle cpu 0.00/99.00\nCurrent Stack Size/Max 240K/8192K\n"
)


def standard_headers(
    event_name: str, calling: tuple[str, str, int], subclass: str | None = None
) -> Headers:
    """The headers every event starts with (Event-Subclass first for CUSTOM, as on ESL)."""
    now = time.time()
    headers: Headers = []
    if subclass is not None:
        headers.append(("Event-Subclass", subclass))
    headers += [
        ("Event-Name", event_name),
        ("Core-UUID", CORE_UUID),
        ("FreeSWITCH-Hostname", HOSTNAME),
        ("FreeSWITCH-Switchname", HOSTNAME),
        ("FreeSWITCH-IPv4", SWITCH_IPV4),
        ("FreeSWITCH-IPv6", SWITCH_IPV6),
        ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))),
        ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))),
        ("Event-Date-Timestamp", str(int(now * 1_000_000))),
        ("Event-Calling-File", calling[0]),
        ("Event-Calling-Function", calling[1]),
        ("Event-Calling-Line-Number", str(calling[2])),
        ("Event-Sequence", str(next(_sequence))),
    ]
    return headers


_REG_TOKEN = ("sofia_reg.c", "sofia_reg_handle_register_token")


def _call_id() -> str:
    return f"{uuidlib.uuid4().int % 10**25}"


def register_failure(
    ip: str,
    user: str = "1000",
    domain: str = SWITCH_IPV4,
    user_agent: str = "friendly-scanner",
    registration_type: str = "REGISTER",
    *,
    port: int = 5060,
    profile: str = "internal",
) -> Headers:
    """`sofia::register_failure` (403 after a wrong digest); profile-name twice, as real."""
    headers = standard_headers("CUSTOM", (*_REG_TOKEN, 1792), "sofia::register_failure")
    return headers + [  # noqa: RUF005
        ("profile-name", profile),
        ("to-user", user),
        ("to-host", domain),
        ("network-ip", ip),
        ("user-agent", user_agent),
        ("profile-name", profile),
        ("network-port", str(port)),
        ("registration-type", registration_type),
    ]


def _reg_common(
    ip: str, user: str, domain: str, port: int, profile: str, call_id: str | None,
    expires: int, status: str = "Registered(UDP)",
) -> Headers:
    return [
        ("profile-name", profile),
        ("from-user", user),
        ("from-host", domain),
        ("contact", f'"" <sip:{user}@{ip}:{port}>'),
        ("call-id", call_id or _call_id()),
        ("rpid", "unknown"),
        ("status", status),
        ("expires", str(expires)),
        ("to-user", user),
        ("to-host", domain),
        ("network-ip", ip),
        ("network-port", str(port)),
    ]


def pre_register(
    ip: str, user: str = "1000", domain: str = SWITCH_IPV4, user_agent: str = "friendly-scanner",
    *, port: int = 5060, profile: str = "internal", call_id: str | None = None,
    expires: int = 3600,
) -> Headers:
    """`sofia::pre_register`: a request challenged with 401/407."""
    return (
        standard_headers("CUSTOM", (*_REG_TOKEN, 1810), "sofia::pre_register")
        + _reg_common(ip, user, domain, port, profile, call_id, expires)
        + [("user-agent", user_agent)]
    )


def register_attempt(
    ip: str, user: str = "1000", domain: str = SWITCH_IPV4, user_agent: str = "friendly-scanner",
    *, auth_result: str = "FORBIDDEN", port: int = 5060, profile: str = "internal",
    call_id: str | None = None, expires: int = 3600,
) -> Headers:
    """`sofia::register_attempt` with `auth-result` (SUCCESS/RENEWED/STALE/FORBIDDEN)."""
    return (
        standard_headers("CUSTOM", (*_REG_TOKEN, 1606), "sofia::register_attempt")
        + _reg_common(ip, user, domain, port, profile, call_id, expires)
        + [("username", user), ("realm", domain), ("user-agent", user_agent),
           ("auth-result", auth_result)]
    )


def _directory_merge(user: str, domain: str) -> Headers:
    return [
        ("sip_auth_username", user),
        ("sip_auth_realm", domain),
        ("number_alias", user),
        ("user_name", user),
        ("domain_name", domain),
        ("toll_allow", "domestic,international,local"),
        ("user_context", "default"),
        ("effective_caller_id_name", f"Extension {user}"),
        ("effective_caller_id_number", user),
    ]


def register(
    ip: str, user: str = "1000", domain: str = SWITCH_IPV4,
    user_agent: str = "Yealink SIP-T46S 66.86.0.15", *, port: int = 5060,
    profile: str = "internal", call_id: str | None = None, expires: int = 3600,
) -> Headers:
    """`sofia::register`: a successful registration, with the directory merge."""
    common = _reg_common(ip, user, domain, port, profile, call_id, expires)
    common.insert(3, ("presence-hosts", domain))
    return (
        standard_headers("CUSTOM", (*_REG_TOKEN, 2059), "sofia::register")
        + common
        + [("username", user), ("realm", domain), ("user-agent", user_agent)]
        + _directory_merge(user, domain)
    )


def unregister(
    ip: str, user: str = "1000", domain: str = SWITCH_IPV4,
    user_agent: str = "Yealink SIP-T46S 66.86.0.15", *, port: int = 5060,
    profile: str = "internal", call_id: str | None = None,
) -> Headers:
    """`sofia::unregister` (Expires: 0)."""
    headers = standard_headers("CUSTOM", (*_REG_TOKEN, 2213), "sofia::unregister")
    return headers + [  # noqa: RUF005
        ("profile-name", profile),
        ("username", user),
        ("from-user", user),
        ("from-host", domain),
        ("contact", f'"" <sip:{user}@{ip}:{port}>'),
        ("call-id", call_id or _call_id()),
        ("rpid", "unknown"),
        ("realm", domain),
        ("network-ip", ip),
        ("network-port", str(port)),
        ("user-agent", user_agent),
        ("expires", "0"),
        *_directory_merge(user, domain),
    ]


def wrong_call_state(ip: str, from_user: str = "1000", *, port: int = 5060) -> Headers:
    """`sofia::wrong_call_state`: an abandoned challenged INVITE (underscore names)."""
    headers = standard_headers(
        "CUSTOM", ("mod_sofia.c", "sofia_on_hangup", 672), "sofia::wrong_call_state"
    )
    headers += [("from_user", from_user), ("network_ip", ip), ("network_port", str(port))]
    return headers


def _channel_headers(
    ip: str, uuid: str, destination: str, context: str, profile: str, user_agent: str,
    authorized: bool, from_host: str, from_user: str, port: int, state: tuple[str, str, int],
) -> Headers:
    name = f"sofia/{profile}/{from_user}@{from_host}"
    headers: Headers = [
        ("Channel-State", state[0]),
        ("Channel-Call-State", state[1]),
        ("Channel-State-Number", str(state[2])),
        ("Channel-Name", name),
        ("Unique-ID", uuid),
        ("Call-Direction", "inbound"),
        ("Presence-Call-Direction", "inbound"),
        ("Channel-HIT-Dialplan", "true"),
        ("Channel-Call-UUID", uuid),
        ("Answer-State", "ringing"),
        ("Caller-Direction", "inbound"),
        ("Caller-Logical-Direction", "inbound"),
        ("Caller-Username", from_user),
        ("Caller-Dialplan", "XML"),
        ("Caller-Caller-ID-Name", from_user),
        ("Caller-Caller-ID-Number", from_user),
        ("Caller-Network-Addr", ip),
        ("Caller-ANI", from_user),
        ("Caller-Destination-Number", destination),
        ("Caller-Unique-ID", uuid),
        ("Caller-Source", "mod_sofia"),
        ("Caller-Context", context),
        ("Caller-Channel-Name", name),
        ("variable_direction", "inbound"),
        ("variable_uuid", uuid),
        ("variable_sip_from_user", from_user),
        ("variable_sip_from_uri", f"{from_user}@{from_host}"),
        ("variable_sip_from_host", from_host),
        ("variable_channel_name", name),
        ("variable_sip_call_id", _call_id()),
        ("variable_sip_local_network_addr", SWITCH_IPV4),
        ("variable_sip_network_ip", ip),
        ("variable_sip_network_port", str(port)),
        ("variable_sip_received_ip", ip),
        ("variable_sip_received_port", str(port)),
        ("variable_sip_via_protocol", "udp"),
        ("variable_sofia_profile_name", profile),
        ("variable_sip_req_user", destination),
        ("variable_sip_to_user", destination),
        ("variable_sip_user_agent", user_agent),
    ]
    if authorized:
        headers += [("variable_sip_authorized", "true"), ("variable_sip_auth_username", from_user),
                    ("variable_sip_auth_realm", from_host)]
    return headers


def channel_create(
    ip: str, uuid: str | None = None, destination: str = "1000", context: str = "default",
    profile: str = "internal", user_agent: str = "Yealink SIP-T46S 66.86.0.15",
    authorized: bool = True, from_host: str = SWITCH_IPV4, *, from_user: str = "1001",
    port: int = 5060,
) -> Headers:
    """`CHANNEL_CREATE` of an inbound sofia call (subset of the real channel headers)."""
    uuid = uuid or str(uuidlib.uuid4())
    return standard_headers(
        "CHANNEL_CREATE", ("switch_core_state_machine.c", "switch_core_session_run", 626)
    ) + _channel_headers(ip, uuid, destination, context, profile, user_agent, authorized,
                         from_host, from_user, port, ("CS_INIT", "DOWN", 2))


def channel_hangup_complete(
    ip: str, uuid: str, cause: str = "NORMAL_CLEARING", destination: str = "1000",
    context: str = "default", profile: str = "internal",
    user_agent: str = "Yealink SIP-T46S 66.86.0.15", authorized: bool = True,
    from_host: str = SWITCH_IPV4, *, from_user: str = "1001", port: int = 5060,
) -> Headers:
    """`CHANNEL_HANGUP_COMPLETE` (Hangup-Cause twice, as real)."""
    base = _channel_headers(ip, uuid, destination, context, profile, user_agent, authorized,
                            from_host, from_user, port, ("CS_REPORTING", "HANGUP", 11))
    base.insert(10, ("Hangup-Cause", cause))
    headers = standard_headers("CHANNEL_HANGUP_COMPLETE", (
        "switch_core_state_machine.c", "switch_core_session_reporting_state", 943))
    headers.append(("Hangup-Cause", cause))
    headers += base
    headers += [("variable_hangup_cause", cause), ("variable_sip_hangup_disposition", "send_bye")]
    return headers


def heartbeat() -> Headers:
    """`HEARTBEAT` as switch_core.c sends it every 20 s."""
    headers = standard_headers("HEARTBEAT", ("switch_core.c", "send_heartbeat", 95))
    return headers + [  # noqa: RUF005
        ("Event-Info", "System Ready"),
        ("Up-Time", STATUS_TEXT.split("\n", 1)[0][3:]),
        ("FreeSWITCH-Version", "1.10.12-release~64bit"),
        ("Uptime-msec", "3723004"),
        ("Session-Count", "0"),
        ("Max-Sessions", "1000"),
        ("Session-Per-Sec", "30"),
        ("Session-Since-Startup", "0"),
        ("Idle-CPU", "99.000000"),
    ]


def background_job(job_uuid: str, command: str, arg: str) -> Headers:
    headers = standard_headers("BACKGROUND_JOB", ("mod_event_socket.c", "api_exec", 1580))
    headers += [("Job-UUID", job_uuid), ("Job-Command", command)]
    if arg:
        headers.append(("Job-Command-Arg", arg))
    return headers

