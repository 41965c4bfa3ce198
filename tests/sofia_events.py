"""Builders of the JSON event bodies the engine reads (sofia::*, CHANNEL_CREATE), shaped
like FreeSWITCH's, for the engine tests (test_rules, test_rules_*, test_engine_properties,
test_windows ...)."""

from __future__ import annotations

import json
from typing import Any

SCANNER_UAS = [
    "friendly-scanner",
    "sipvicious",
    "sipcli/v1.8",
    "VaxSIPUserAgent/3.1",
    "pplsip",
    "iWar",
    "sundayddr",
    "SIPBomber",
    "smap",
    "sip-scan",
]
PHONE_UAS = [
    "3CXPhoneSystem",
    "Yealink SIP-T46S",
    "Grandstream GXP2170",
    "PolycomVVX",
    "Zoiper",
    "Linphone",
    "MicroSIP",
    "Bria",
    "Cisco/SPA504G",
    "sipp-lab",
]

STANDARD: dict[str, str] = {
    "Core-UUID": "7b2d4c1a-5e3f-4a8b-9c0d-1e2f3a4b5c6d",
    "FreeSWITCH-Hostname": "pbx01",
    "FreeSWITCH-IPv4": "192.0.2.10",
    "Event-Date-Timestamp": "1741944413163402",
    "Event-Calling-File": "sofia_reg.c",
    "Event-Calling-Function": "sofia_reg_handle_register_token",
    "Event-Calling-Line-Number": "1792",
    "Event-Sequence": "4714",
}


def sofia(subclass: str, ip: str, **headers: Any) -> bytes:
    """A sofia::<subclass> CUSTOM event from `ip` (keyword names: _ becomes -)."""
    body: dict[str, Any] = {"Event-Subclass": f"sofia::{subclass}", "Event-Name": "CUSTOM"}
    body.update(STANDARD)
    body["profile-name"] = "internal"
    if subclass == "wrong_call_state":
        body["network_ip"] = ip
        body["network_port"] = "5060"
    else:
        body["network-ip"] = ip
        body["network-port"] = "5060"
    for key, value in headers.items():
        body[key.replace("_", "-")] = value
    return json.dumps(body).encode()


def failure(ip: str, user: str = "1000", ua: str = "Yealink SIP-T46S", **kw: Any) -> bytes:
    return sofia(
        "register_failure",
        ip,
        to_user=user,
        to_host=kw.pop("to_host", "pbx.example.net"),
        user_agent=ua,
        registration_type=kw.pop("registration_type", "REGISTER"),
        **kw,
    )


def _exchange(subclass: str, ip: str, user: str, **headers: Any) -> bytes:
    """A sofia::<subclass> event of `user`'s registration exchange (from and to the same
    user at pbx.example.net)."""
    return sofia(subclass, ip, from_user=user, from_host="pbx.example.net", to_user=user,
                 to_host="pbx.example.net", **headers)  # fmt: skip


def attempt(ip: str, user: str = "1000", result: str = "FORBIDDEN", ua: str = "Zoiper") -> bytes:
    return _exchange("register_attempt", ip, user, username=user, user_agent=ua,
                     auth_result=result)  # fmt: skip


def pre_register(ip: str, user: str = "1000", ua: str = "Zoiper") -> bytes:
    return _exchange("pre_register", ip, user, user_agent=ua)


def register(ip: str, user: str = "1000", ua: str = "Yealink SIP-T46S") -> bytes:
    return _exchange("register", ip, user, username=user, user_agent=ua)


def wrong_call_state(ip: str, user: str = "1001") -> bytes:
    return json.dumps(
        {
            "Event-Subclass": "sofia::wrong_call_state",
            "Event-Name": "CUSTOM",
            **STANDARD,
            "Event-Calling-File": "mod_sofia.c",
            "Event-Calling-Function": "sofia_on_hangup",
            "from_user": user,
            "network_ip": ip,
            "network_port": "5060",
        }
    ).encode()


def channel_create(
    ip: str,
    uuid: str = "91f12999-0000-0000-0000-000000000001",
    *,
    destination: str = "9999",
    context: str = "default",
    profile: str = "internal",
    authorized: str | None = "true",
    ua: str = "Yealink SIP-T46S",
    from_host: str = "pbx.example.net",
    user: str = "1001",
) -> bytes:
    body: dict[str, Any] = {
        "Event-Name": "CHANNEL_CREATE",
        **STANDARD,
        "Event-Calling-File": "switch_core_state_machine.c",
        "Event-Calling-Function": "switch_core_session_run",
        "Unique-ID": uuid,
        "Caller-Username": user,
        "Caller-Network-Addr": ip,
        "Caller-Destination-Number": destination,
        "Caller-Context": context,
        "variable_sofia_profile_name": profile,
        "variable_sip_network_ip": ip,
        "variable_sip_user_agent": ua,
        "variable_sip_from_host": from_host,
        "variable_sip_from_user": user,
    }
    if authorized is not None:
        body["variable_sip_authorized"] = authorized
    return json.dumps(body).encode()
