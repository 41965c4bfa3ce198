"""Drop-in details (issue 14 §8) over real HTTP against the real process tree.

Every endpoint of the Go program answers its exact key set with the Go types (the shapes
below are transcribed from the Go implementation's facts, §4.3-4.5 and §1.5), plus only the
fsguard keys listed as documented extras; a missing Go key fails. Also: whitelistCount
counts learned entries, 405 `Allow` lists every method of the path, a refused ESL command
answers Go's 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from fsguard_cli.simulator import (
    channel_create,
    register,
    register_attempt,
    register_failure,
    wrong_call_state,
)
from tests.api_http import api_client
from tests.netns_helpers import requires_netns
from tests.system_helpers import PHONE_UA, fsguard_config, running_fsguard, wait_for
from tests.test_api_system import AUTH, TOKEN, System

pytestmark = [requires_netns]

API_PORT = 18121
STR, INT, BOOL = str, int, bool
LIST_OR_NULL = (list, type(None))
ENTRY_TIMES = {"addedAt": STR, "expiresAt": STR}

# path -> Go key -> type (a nested dict: the sub-object's keys and types)
GO_OBJECTS: dict[str, dict[str, Any]] = {
    "/health": {"status": STR, "version": STR},
    "/security/status": {"enabled": BOOL, "autoBlock": BOOL, "whitelistCount": INT,
                         "blacklistCount": INT, "eslConnected": BOOL, "eslHost": STR,
                         "eslPort": STR},
    "/security/stats": {"totalRegistrations": INT, "failedRegistrations": INT,
                        "blockedAttempts": INT, "wrongCallStates": INT,
                        "lastRegistrationTime": STR, "lastFailedTime": STR,
                        "lastWrongCallStateTime": STR, "activeWhitelistEntries": INT,
                        "activeBlacklistEntries": INT, "reportsSent": INT, "reportsFailed": INT},
    "/security/esl": {"connected": BOOL, "host": STR, "port": STR, "connectionAttempts": INT,
                      "connectionErrors": INT, "eventsProcessed": INT, "eventsQueued": INT,
                      "eventsDropped": INT, "logLevel": STR, "workerCount": INT,
                      "queueLength": INT, "queueCapacity": INT},
    "/security/rate-limit": {"enabled": BOOL, "callRateLimit": INT, "callRateInterval": STR,
                             "registrationLimit": INT, "registrationWindow": STR,
                             "autoBlockOnExceed": BOOL, "blockDuration": STR,
                             "whitelistBypass": BOOL, "cleanupInterval": STR},
    "/security/iptables": {"chain": STR, "ipset": STR, "blockedIps": LIST_OR_NULL, "count": INT},
    "/cache/stats": {"enabled": BOOL,
                     "security": {"hits": INT, "misses": INT, "entries": INT, "ttl": STR},
                     "operations": {"writes": INT, "reads": INT, "misses": INT, "deletes": INT}},
    "/system/stats": {"version": STR, "goroutines": INT, "cpuCores": INT,
                      "memory": {"allocMb": INT, "totalAllocMb": INT, "sysMb": INT,
                                 "gcRuns": INT, "heapObjects": INT}},
    "/security/untrusted-networks/test/evil.example": {"domain": STR, "isUntrusted": BOOL},
    "/security/blacklist/203.0.113.60": {"ip": STR, "blacklisted": BOOL},
    "/security/whitelist/198.51.100.99": {"ip": STR, "whitelisted": BOOL},
}  # fmt: skip
# fsguard keys next to Go's, each documented in docs/api.md (path -> dotted extra keys)
EXTRAS: dict[str, set[str]] = {
    "/system/stats": {"pythonVersion", "uptimeSeconds", "workerCount", "processCount",
                      "threads", "processes", "memory.rssMb"},
    # inside a trusted network: whitelisted with Go's userId/domain ("") plus trustedNetwork
    "/security/whitelist/198.51.100.99": {"trustedNetwork", "userId", "domain"},
    # issue 15: the active firewall backend and its ruleset as read from the kernel
    "/security/iptables": {"backend", "ruleset"},
    # failed ESL hardening checks (default password, exposed esl_host)
    "/security/status": {"eslWarnings"},
}  # fmt: skip
# path -> the Go shape of each map value
GO_MAPS: dict[str, dict[str, Any]] = {
    "/security/whitelist": {"ip": STR, **ENTRY_TIMES, "lastSeen": STR, "userId": STR,
                            "domain": STR, "permanent": BOOL},
    "/security/blacklist": {"ip": STR, **ENTRY_TIMES, "reason": STR, "failCount": INT,
                            "permanent": BOOL},
    "/security/failed": {"count": INT, "firstAttempt": STR, "lastAttempt": STR,
                         "userIds": LIST_OR_NULL, "domains": LIST_OR_NULL},
    "/security/wrong-call-states": {"count": INT, "firstAttempt": STR, "lastAttempt": STR,
                                    "userIds": LIST_OR_NULL},
    "/security/rate-limit/calls": {"count": INT, "firstRequest": STR, "lastRequest": STR,
                                   "userIds": LIST_OR_NULL, "domains": LIST_OR_NULL},
    "/security/rate-limit/registrations": {"count": INT, "firstRequest": STR,
                                           "lastRequest": STR, "userIds": LIST_OR_NULL,
                                           "domains": LIST_OR_NULL},
}  # fmt: skip
STATUS_MESSAGE = {"status": STR, "message": STR}

LEARNED = "203.0.113.30"  # registers successfully: a learned whitelist entry
MANUAL = "203.0.113.31"
ATTACKER = "203.0.113.32"


def check_shape(where: str, body: Any, shape: dict[str, Any], extras: set[str],
                prefix: str = "") -> None:  # fmt: skip
    assert isinstance(body, dict), f"{where}: not an object: {body!r}"
    own = {k for k in extras if "." not in k.removeprefix(prefix) and k.startswith(prefix)}
    allowed = set(shape) | {k.removeprefix(prefix) for k in own}
    missing = set(shape) - set(body)
    assert not missing, f"{where}: missing Go keys {sorted(missing)}"
    unexpected = set(body) - allowed
    assert not unexpected, f"{where}: keys neither Go's nor documented extras: {unexpected}"
    for key, kind in shape.items():
        value = body[key]
        if isinstance(kind, dict):
            check_shape(f"{where}.{key}", value, kind, extras, f"{prefix}{key}.")
        elif kind is INT:
            assert isinstance(value, int) and not isinstance(value, bool), (where, key, value)
        else:
            assert isinstance(value, kind), (where, key, value)


def dropin_config(tmp: Path, esl_port: int) -> dict[str, Any]:
    return fsguard_config(
        tmp, esl_port, set_name="fsg-dropin", api_port=API_PORT,
        server={"api_token": TOKEN},
        cache={"security_ttl": "1s"},
        security={"auto_whitelist_on_success": True, "untrusted_networks": ["evil.example"],
                  "chandaemon": {"allowed_api_ips": ["127.0.0.1"]}},
    )  # fmt: skip


@pytest.fixture(scope="module")
def sysd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("dropin")
    with running_fsguard(tmp, lambda port: dropin_config(tmp, port), prefix="fsgdrop") as rs:
        assert rs.ns is not None
        with api_client(rs.ns, API_PORT) as (url, client):
            s = System(rs.ns, rs.fake, rs.proc, url, url, client, rs.log_path, rs)
            rs.fake.send_events([register(LEARNED, user="1001"), channel_create("203.0.113.35"),
                                 register_attempt("203.0.113.36", user_agent=PHONE_UA)])
            rs.fake.send_events([register_failure(ATTACKER, user="1000") for _ in range(6)])
            rs.fake.send_events([wrong_call_state("203.0.113.33")])
            rs.fake.send_events([register_failure("203.0.113.34", user="1000", user_agent=PHONE_UA)
                                 for _ in range(2)])  # below the threshold: listed, not banned
            assert wait_for(lambda: s.in_set(ATTACKER), 10), "attacker never banned"
            assert wait_for(lambda: LEARNED in client.get("/security/whitelist").json(), 10)
            r = client.post("/security/whitelist", json={"ip": MANUAL}, headers=AUTH)
            assert r.status_code == 200, r.text
            r = client.post("/security/whitelist", json={"ip": LEARNED}, headers=AUTH)
            assert r.status_code == 200, r.text  # manual too: still one address
            yield s


def get(s: System, path: str) -> Any:
    r = s.client.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def test_every_go_object_has_the_exact_go_keys_and_types(sysd: System) -> None:
    for path, shape in GO_OBJECTS.items():
        check_shape(path, get(sysd, path), shape, EXTRAS.get(path, set()))


def test_every_go_map_and_list_has_the_go_shapes(sysd: System) -> None:
    def filled(path: str) -> bool:
        return bool(sysd.client.get(path).json())

    for path, shape in GO_MAPS.items():
        assert wait_for(partial(filled, path), 10), f"{path} stayed empty"
        for key, entry in get(sysd, path).items():
            check_shape(f"{path}[{key}]", entry, shape, set())
    patterns = get(sysd, "/security/untrusted-networks")
    assert isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)
    lookup = get(sysd, f"/security/whitelist/{MANUAL}")
    check_shape("whitelist lookup", lookup,
                {"ip": STR, "whitelisted": BOOL, "userId": STR, "domain": STR}, set())  # fmt: skip


def test_write_answers_have_the_go_shapes(sysd: System) -> None:
    c = sysd.client
    answers = [
        c.post("/security/blacklist", json={"ip": "203.0.113.61"}, headers=AUTH),
        c.delete("/security/blacklist/203.0.113.61", headers=AUTH),
        c.post("/security/esl/log-level", json={"level": "info"}, headers=AUTH),
        c.post("/security/untrusted-networks", json={"pattern": "x.example"}, headers=AUTH),
        c.delete("/security/untrusted-networks/x.example", headers=AUTH),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        check_shape(str(r.request.url), r.json(), STATUS_MESSAGE, set())
    r = c.post("/security/blacklist/batch", json=[{"ip": "203.0.113.62"}, {"ip": "x"}],
               headers=AUTH)  # fmt: skip
    items = r.json()["results"]
    check_shape("batch ok", items[0], {"ip": STR, "status": STR}, set())
    check_shape("batch error", items[1], {"ip": STR, "error": STR}, set())
    r = c.delete("/api/v1/ips/203.0.113.62/block", headers=AUTH)
    check_shape("unblock", r.json(), {"ip": STR, "banned": BOOL, "message": STR}, set())
    r = c.post("/security/esl/command", json={"command": "status"}, headers=AUTH)
    check_shape("command", r.json(), {"command": STR, "response": STR}, set())
    r = c.post("/cache/security/clear", headers=AUTH)
    check_shape("cache clear", r.json(), {"status": STR}, set())


def test_whitelist_count_includes_learned_entries(sysd: System) -> None:
    assert sysd.client.post("/cache/security/clear", headers=AUTH).status_code == 200
    listed = get(sysd, "/security/whitelist")
    assert {LEARNED, MANUAL} <= set(listed)
    status = get(sysd, "/security/status")
    stats = get(sysd, "/security/stats")
    assert status["whitelistCount"] == stats["activeWhitelistEntries"] == len(listed)


def test_refused_command_is_500_and_403_only_means_source_not_permitted(sysd: System) -> None:
    r = sysd.client.post("/security/esl/command", json={"command": "reloadxml"}, headers=AUTH)
    assert r.status_code == 500
    assert r.json() == {"error": "command not allowed: reloadxml"}
    r = sysd.client.post("/security/esl/command", json={"command": "status"})  # no token
    assert r.status_code == 401


PROBES = ["GET", "POST", "DELETE", "PUT", "PATCH"]
PATHS = {  # a concrete path per template, and the methods it serves
    "/health": {"GET"},
    "/system/stats": {"GET"},
    "/cache/stats": {"GET"},
    "/security/status": {"GET"},
    "/security/blacklist": {"GET", "POST"},
    "/security/blacklist/203.0.113.70": {"GET", "DELETE"},
    "/security/blacklist/batch": {"GET", "POST", "DELETE"},  # batch, and {ip}="batch"
    "/security/whitelist/198.51.100.70": {"GET", "DELETE"},
    "/security/untrusted-networks": {"GET", "POST"},
    "/security/untrusted-networks/10.9.0.0/16": {"DELETE"},
    "/security/untrusted-networks/test/x.example": {"GET"},
    "/security/esl/log-level": {"POST"},
    "/api/v1/ips/203.0.113.70/block": {"DELETE"},
}


def test_405_allow_names_every_method_of_the_path(sysd: System) -> None:
    for path, served in PATHS.items():
        for method in PROBES:
            r = sysd.client.request(method, path, headers=AUTH, content=b"{")
            if method in served:
                assert r.status_code != 405, (method, path, r.text)
                continue
            assert r.status_code == 405, (method, path, r.status_code, r.text)
            allow = {m.strip() for m in r.headers["allow"].split(",")}
            assert allow == served, (method, path, allow)
    r = sysd.client.options("/security/untrusted-networks/test/x.example")
    assert r.status_code == 405 and r.headers["allow"] == "GET"  # never DELETE


def test_system_stats_go_values_are_the_nearest_python_ones(sysd: System) -> None:
    body = get(sysd, "/system/stats")
    mem = body["memory"]
    assert body["goroutines"] == body["threads"] > 0
    assert mem["allocMb"] == mem["sysMb"] == mem["rssMb"] > 0
    assert mem["totalAllocMb"] >= mem["allocMb"]
    assert mem["gcRuns"] > 0 and mem["heapObjects"] > 0
