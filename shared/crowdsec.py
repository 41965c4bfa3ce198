"""CrowdSec Local API shapes both sides agree on: alerts fsguard pushes, decisions it pulls.

The firewall builds the alert JSON when it commits a ban (the outbox payload); the fleet
connector (fsguard_fleet) sends it and parses the decision stream into `RemoteDecision`s
that the firewall applies. Shapes follow CrowdSec's pkg/models/localapi_swagger.yaml.
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.durations import parse_go_duration

ORIGIN = "crowdsec"  # what `origin` says on a ban that came from the LAPI
# The pushed decisions' origin: CrowdSec 1.4.6 lists only origins "crowdsec" and "cscli"
# in a plain `cscli decisions list` (others need -a).
PUSH_ORIGIN = "crowdsec"
SCENARIO_PREFIX = "fsguard/"
PERMANENT_GO = "87600h"  # a "permanent" local ban is pushed as ten years
MAX_MESSAGE = 512
MAX_DURATION_TEXT = 64  # a longer LAPI duration is refused before it is parsed

_SCENARIO_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scenario_for(rule: str) -> str:
    """`fsguard/<rule>`, the rule reduced to safe characters."""
    return SCENARIO_PREFIX + (_SCENARIO_SAFE.sub("_", rule)[:64] or "unknown")


def scope_for(key: str) -> str:
    """`Range` for a prefix (aggregated IPv6), `Ip` for an address."""
    return "Range" if "/" in key else "Ip"


def alert_for(
    key: str, rule: str, reason: str, created: float, expires: float | None, events: int,
    *, simulated: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One alert with its decision, as POST /v1/alerts takes it (key is normalized)."""
    scenario = scenario_for(rule)
    scope = scope_for(key)
    seconds = None if expires is None else max(1, math.ceil(expires - created))
    duration = PERMANENT_GO if seconds is None else f"{seconds}s"
    source: dict[str, Any] = {"scope": scope, "value": key}
    source["range" if scope == "Range" else "ip"] = key
    stamp = rfc3339(created)
    message = _CONTROL.sub("?", reason)[:MAX_MESSAGE] or scenario
    return {
        "scenario": scenario,
        "scenario_hash": "",
        "scenario_version": "",
        "message": message,
        "events_count": max(1, int(events)),
        "start_at": stamp,
        "stop_at": stamp,
        "capacity": 0,
        "leakspeed": "0",
        "simulated": simulated,
        "remediation": True,
        "events": [],
        "source": source,
        "decisions": [
            {
                "origin": PUSH_ORIGIN,
                "type": "ban",
                "scope": scope,
                "value": key,
                "duration": duration,
                "scenario": scenario,
                "simulated": simulated,
            }
        ],
    }


# --- the decision stream --------------------------------------------------------------


class StreamDecision(msgspec.Struct, kw_only=True):
    """One decision as GET /v1/decisions/stream returns it (unknown fields ignored)."""

    id: int = 0
    origin: str = ""
    type: str = ""
    scope: str = ""
    value: str = ""
    duration: str = ""
    scenario: str = ""
    simulated: bool = False


class StreamResponse(msgspec.Struct, kw_only=True):
    new: list[StreamDecision] | None = None
    deleted: list[StreamDecision] | None = None


class RemoteDecision(msgspec.Struct, array_like=True):
    """A validated ban decision from the LAPI, as sent to the firewall (compact)."""

    id: int
    value: str  # normalized address or prefix text
    seconds: float  # remaining duration (new entries); 0 for deleted ones
    origin: str
    scenario: str


def _clean(text: str, limit: int = 128) -> str:
    return _CONTROL.sub("?", text)[:limit]


def validate(d: StreamDecision, *, deleted: bool) -> RemoteDecision | None:
    """The decision if it is a ban on scope Ip/Range with a parseable value and duration.

    Deleted entries carry negative durations in 1.4.6; new ones must have time left.
    """
    if d.type.lower() != "ban" or d.scope.lower() not in ("ip", "range") or d.id <= 0:
        return None
    try:
        if len(d.value) > 49 or len(d.duration) > MAX_DURATION_TEXT:
            raise ValueError(d.value)
        if "/" in d.value:
            net = ipaddress.ip_network(d.value, strict=False)
            value = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        else:
            value = str(ipaddress.ip_address(d.value))
        seconds = parse_go_duration(d.duration) if d.duration else 0.0
    except ValueError:
        return None
    if not deleted and seconds <= 0:
        return None
    return RemoteDecision(
        d.id, value, 0.0 if deleted else seconds, _clean(d.origin), _clean(d.scenario)
    )
