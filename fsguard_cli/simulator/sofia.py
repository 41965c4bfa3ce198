"""mod_sofia's `sofia xmlstatus gateway` reply, for the fake FreeSWITCH.

Same shape and text as FreeSWITCH 1.10's cmd_xml_status / xml_gateway_status
(src/mod/endpoints/mod_sofia/mod_sofia.c): an ISO-8859-1 XML header line, then
`<gateways>` with one `<gateway>` block per gateway of every running profile
(values written as FreeSWITCH does: `<proxy>` and `<to>` are not XML-escaped).
"""

from __future__ import annotations

import msgspec

HEADER = '<?xml version="1.0" encoding="ISO-8859-1"?>'


class SimGateway(msgspec.Struct, kw_only=True):
    name: str
    proxy: str  # the register proxy URI as FreeSWITCH shows it, e.g. "sip:203.0.113.5"
    profile: str = "external"
    realm: str = ""
    username: str = "fsguard-lab"
    state: str = "REGED"  # NOREG, TRYING, REGED, FAILED, FAIL_WAIT, ...
    status: str = "UP"


def _block(gw: SimGateway) -> str:
    realm = gw.realm or gw.proxy.removeprefix("sip:")
    lines = [
        ("name", gw.name),
        ("profile", gw.profile),
        ("scheme", "Digest"),
        ("realm", realm),
        ("username", gw.username),
        ("password", "yes"),
        ("from", f"&lt;sip:{gw.username}@{realm}&gt;"),
        ("contact", f"&lt;sip:gw+{gw.name}@192.0.2.2:5080;transport=udp;gw={gw.name}&gt;"),
        ("exten", gw.username),
        ("to", f"sip:{gw.username}@{realm}"),
        ("proxy", gw.proxy),
        ("context", "public"),
        ("expires", "3600"),
        ("freq", "3600"),
        ("ping", "0"),
        ("pingfreq", "0"),
        ("pingmin", "1"),
        ("pingcount", "0"),
        ("pingmax", "0"),
        ("pingtime", "0.00"),
        ("pinging", "0"),
        ("state", gw.state),
        ("status", gw.status),
        ("uptime-usec", "3721004931" if gw.status == "UP" else "0"),
        ("calls-in", "0"),
        ("calls-out", "0"),
        ("failed-calls-in", "0"),
        ("failed-calls-out", "0"),
    ]
    body = "".join(f"    <{tag}>{value}</{tag}>\n" for tag, value in lines)
    return f"  <gateway>\n{body}  </gateway>\n"


def xmlstatus_gateways(gateways: list[SimGateway]) -> str:
    """The reply to `api sofia xmlstatus gateway` (every gateway)."""
    return f"{HEADER}\n<gateways>\n" + "".join(map(_block, gateways)) + "</gateways>\n"
