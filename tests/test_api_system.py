"""The REST API over real HTTP with the real system behind it.

One `fsguard run` tree (supervisor, 2 workers, firewall, API as real processes) runs in a
fresh network namespace against the fake FreeSWITCH over TCP, for the whole module. The
API listens on the namespace's loopback; a small TCP forwarder in this process makes it
reachable from the test, from 127.0.0.1 (allow-listed) or 127.0.0.2 (not).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fsguard_cli.simulator import ThreadedFakeFreeSwitch, register_failure
from shared.iputil import shard_of
from tests.api_http import Forwarder, api_client
from tests.go_shapes import GO_IPTABLES_KEYS, GO_STATUS_KEYS
from tests.netns_helpers import requires_netns
from tests.system_helpers import RunningSystem, fsguard_config, running_fsguard, wait_for

pytestmark = [requires_netns]

SET_NAME = "fsg-api"
API_PORT = 18099
TOKEN = "s3cret-test-token"
WORKERS = 2
PHONE_UA = "Yealink SIP-T46S 66.86.0.15"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --- harness ---------------------------------------------------------------------------------


@dataclass
class System:
    ns: str
    fake: ThreadedFakeFreeSwitch
    proc: subprocess.Popen[bytes]
    url: str
    denied_url: str
    client: httpx.Client
    log: Path
    running: RunningSystem

    def in_set(self, ip: str) -> bool:
        return self.running.in_set(ip)


def api_config(tmp: Path, esl_port: int) -> dict[str, Any]:
    return fsguard_config(
        tmp, esl_port, set_name=SET_NAME, api_port=API_PORT, workers=WORKERS,
        server={"api_token": TOKEN},
        cache={"security_ttl": "1s"},
        security={
            "failed_attempts_window": None,
            "untrusted_networks": ["evil.example"],
            "chandaemon": {"allowed_api_ips": ["127.0.0.1"]},
        },
    )  # fmt: skip


@contextmanager
def running_system(tmp: Path, prefix: str = "fsgapi") -> Iterator[System]:
    with running_fsguard(tmp, lambda port: api_config(tmp, port), prefix=prefix) as rs:
        assert rs.ns is not None
        denied = Forwarder(rs.ns, API_PORT, source="127.0.0.2")
        try:
            with api_client(rs.ns, API_PORT) as (url, client):
                yield System(rs.ns, rs.fake, rs.proc, url, denied.url, client, rs.log_path, rs)
        finally:
            denied.close()


@pytest.fixture(scope="module")
def sysm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("apisys")) as s:
        yield s


def post(s: System, path: str, body: Any = None) -> httpx.Response:
    return s.client.post(path, json=body, headers=AUTH)


def delete(s: System, path: str) -> httpx.Response:
    return s.client.delete(path, headers=AUTH)


# --- Go response shapes ----------------------------------------------------------------------

# fsguard's additive fields (issue 12: failed ESL hardening checks).
FSGUARD_KEYS: dict[str, set[str]] = {"/security/status": {"eslWarnings"}}
GO_KEYS: dict[str, set[str]] = {
    "/health": {"status", "version"},
    "/security/status": GO_STATUS_KEYS,
    "/security/stats": {
        "totalRegistrations",
        "failedRegistrations",
        "blockedAttempts",
        "wrongCallStates",
        "lastRegistrationTime",
        "lastFailedTime",
        "lastWrongCallStateTime",
        "activeWhitelistEntries",
        "activeBlacklistEntries",
        "reportsSent",
        "reportsFailed",
    },
    "/security/rate-limit": {
        "enabled",
        "callRateLimit",
        "callRateInterval",
        "registrationLimit",
        "registrationWindow",
        "autoBlockOnExceed",
        "blockDuration",
        "whitelistBypass",
        "cleanupInterval",
    },
    # Go's four keys plus issue 15's backend and ruleset (docs/api.md)
    "/security/iptables": GO_IPTABLES_KEYS | {"backend", "ruleset"},
    "/cache/stats": {"enabled", "security", "operations"},
}


def test_read_endpoints_answer_go_shapes(sysm: System) -> None:
    c = sysm.client
    for path, keys in GO_KEYS.items():
        r = c.get(path)
        assert r.status_code == 200, (path, r.text)
        assert set(r.json()) == keys | FSGUARD_KEYS.get(path, set()), path
    rl = c.get("/security/rate-limit").json()
    assert rl["callRateInterval"] == "1m0s" and rl["blockDuration"] == "15m0s"
    assert rl["cleanupInterval"] == "5m0s" and rl["callRateLimit"] == 20
    cache = c.get("/cache/stats").json()
    assert set(cache["security"]) == {"hits", "misses", "entries", "ttl"}
    assert cache["security"]["ttl"] == "1s"
    assert set(cache["operations"]) == {"writes", "reads", "misses", "deletes"}
    assert c.get("/security/status").json()["eslConnected"] is True
    for path in ("/security/failed", "/security/wrong-call-states", "/security/whitelist",
                 "/security/rate-limit/calls", "/security/rate-limit/registrations",
                 "/security/blacklist"):  # fmt: skip
        r = c.get(path)
        assert r.status_code == 200 and isinstance(r.json(), dict), path
    assert c.get("/security/untrusted-networks").json() == ["evil.example"]
    assert c.get("/openapi.json").json()["openapi"].startswith("3.")
    assert c.get("/docs").status_code == 200


def test_system_stats_covers_the_process_tree(sysm: System) -> None:
    data = sysm.client.get("/system/stats").json()
    assert data["workerCount"] == WORKERS and data["cpuCores"] >= 1
    assert data["pythonVersion"].startswith("3.")
    roles = sorted(p["role"] for p in data["processes"])
    assert roles == ["api", "firewall", "supervisor", "worker", "worker"], roles
    assert all(p["running"] and p["rssMb"] > 1 and p["threads"] >= 1 for p in data["processes"])
    assert data["memory"]["rssMb"] >= sum(int(p["rssMb"]) for p in data["processes"]) - 5
    assert data["processCount"] == 5 and data["uptimeSeconds"] > 0
    assert data["goroutines"] == data["threads"]  # Go key kept, nearest Python value


# --- access control ----------------------------------------------------------------------------


def test_token_and_allow_list(sysm: System) -> None:
    body = {"ip": "203.0.113.200"}
    r = sysm.client.post("/security/blacklist", json=body)
    assert r.status_code == 401 and r.json() == {"error": "missing bearer token"}
    r = sysm.client.post("/security/blacklist", json=body, headers={"Authorization": "Bearer x"})
    assert r.status_code == 401 and r.json() == {"error": "invalid bearer token"}
    with httpx.Client(base_url=sysm.denied_url, timeout=10) as outsider:
        r = outsider.post("/security/blacklist", json=body, headers=AUTH)
        assert r.status_code == 403
        assert r.json() == {"error": "source IP not permitted for this operation"}
        r = outsider.delete("/api/v1/ips/203.0.113.200/block", headers=AUTH)
        assert r.status_code == 403
        assert outsider.get("/security/status").status_code == 200  # reads stay open
    assert not sysm.in_set("203.0.113.200")


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/security/whitelist/not-an-ip"),
        ("DELETE", "/security/whitelist/not-an-ip"),
        ("GET", "/security/blacklist/not-an-ip"),
        ("DELETE", "/security/blacklist/not-an-ip"),
        ("DELETE", "/api/v1/ips/not-an-ip/block"),
        ("GET", "/security/whitelist/batch"),
    ],
)
def test_every_ip_path_is_validated(sysm: System, method: str, path: str) -> None:
    r = sysm.client.request(method, path, headers=AUTH)
    bad = path.split("/")[-1] if "block" not in path else "not-an-ip"
    assert r.status_code == 400
    assert r.json() == {"error": f"invalid IP address: {bad}"}


def test_bodies_are_validated(sysm: System) -> None:
    for path, body in [
        ("/security/blacklist", {"ip": "300.1.1.1"}),
        ("/security/whitelist", {"ip": "example.com"}),
    ]:
        r = post(sysm, path, body)
        assert r.status_code == 400 and r.json()["error"].startswith("invalid IP address:"), path
    assert post(sysm, "/security/blacklist", {"reason": "x"}).status_code == 400
    r = post(sysm, "/security/blacklist", {"ip": "203.0.113.201", "duration": "soon"})
    assert r.status_code == 400 and "invalid duration" in r.json()["error"]
    r = post(sysm, "/security/blacklist", {"ip": "198.51.100.7"})
    assert r.status_code == 400
    assert r.json() == {"error": "cannot blacklist IP in trusted network: 198.51.100.7"}
    r = post(sysm, "/security/whitelist/batch", [{"ip": "203.0.113.1"}] * 1001)
    assert r.status_code == 400 and r.json() == {"error": "batch size exceeds limit of 1000"}


# --- bans in the kernel ----------------------------------------------------------------------


@pytest.mark.parametrize("ip", ["203.0.113.50", "2001:db8::50"])
def test_manual_ban_reaches_kernel_and_unban_removes_it(sysm: System, ip: str) -> None:
    r = post(sysm, "/security/blacklist", {"ip": ip, "reason": "manual test", "duration": "90m"})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success", "message": f"IP {ip} added to blacklist"}
    assert sysm.in_set(ip), f"{ip} not in the kernel set"
    assert sysm.client.get(f"/security/blacklist/{ip}").json() == {"ip": ip, "blacklisted": True}
    entry = sysm.client.get("/security/blacklist").json()[ip]
    assert set(entry) == {"ip", "addedAt", "expiresAt", "reason", "failCount", "permanent"}
    assert entry["reason"] == "manual test" and entry["permanent"] is False
    r = delete(sysm, f"/security/blacklist/{ip}")
    assert r.status_code == 200
    assert r.json() == {"status": "success", "message": f"IP {ip} removed from blacklist"}
    assert not sysm.in_set(ip)
    assert delete(sysm, f"/security/blacklist/{ip}").status_code == 404
    # the chanDaemon unban receiver stays idempotent
    r = delete(sysm, f"/api/v1/ips/{ip}/block")
    assert r.status_code == 200
    assert r.json() == {"ip": ip, "banned": False, "message": "IP unblocked successfully"}


def test_unban_receiver_removes_a_ban(sysm: System) -> None:
    ip = "203.0.113.51"
    assert post(sysm, "/security/blacklist", {"ip": ip, "permanent": True}).status_code == 200
    assert sysm.in_set(ip)
    entry = sysm.client.get("/security/blacklist").json()[ip]
    assert entry["permanent"] is True and entry["expiresAt"] == "0001-01-01T00:00:00Z"
    assert delete(sysm, f"/api/v1/ips/{ip}/block").status_code == 200
    assert not sysm.in_set(ip)


def test_whitelisting_a_banned_address_unbans_it(sysm: System) -> None:
    ip = "203.0.113.60"
    assert post(sysm, "/security/blacklist", {"ip": ip, "duration": 600}).status_code == 200
    assert sysm.in_set(ip)
    r = post(sysm, "/security/whitelist", {"ip": ip, "userId": "1001", "domain": "pbx.test"})
    assert r.status_code == 200
    assert r.json() == {
        "status": "success",
        "message": f"IP {ip} added to whitelist for 1001@pbx.test",
    }
    assert not sysm.in_set(ip), "whitelisting left the kernel entry"
    assert sysm.client.get(f"/security/blacklist/{ip}").json()["blacklisted"] is False
    r = post(sysm, "/security/blacklist", {"ip": ip})
    assert r.status_code == 400 and r.json() == {"error": f"cannot blacklist whitelisted IP: {ip}"}
    assert not sysm.in_set(ip)
    got = sysm.client.get(f"/security/whitelist/{ip}").json()
    assert got == {"ip": ip, "whitelisted": True, "userId": "1001", "domain": "pbx.test"}
    entry = sysm.client.get("/security/whitelist").json()[ip]
    assert set(entry) == {"ip", "addedAt", "expiresAt", "lastSeen", "userId", "domain", "permanent"}
    assert delete(sysm, f"/security/whitelist/{ip}").status_code == 200
    assert sysm.client.get(f"/security/whitelist/{ip}").json() == {"ip": ip, "whitelisted": False}
    r = delete(sysm, f"/security/whitelist/{ip}")
    assert r.status_code == 404
    # trusted networks count as whitelisted (Go answered false)
    got = sysm.client.get("/security/whitelist/198.51.100.5").json()
    assert got["whitelisted"] is True and got["trustedNetwork"] == "198.51.100.0/24"


def test_batches_report_per_item(sysm: System) -> None:
    r = post(sysm, "/security/blacklist/batch",
             [{"ip": "203.0.113.70"}, {"ip": "bogus"}, {"ip": "198.51.100.9"},
              {"ip": "2001:db8::70", "permanent": True}])  # fmt: skip
    assert r.status_code == 200
    assert r.json() == {
        "results": [
            {"ip": "203.0.113.70", "status": "success"},
            {"ip": "bogus", "error": "invalid IP address: bogus"},
            {"ip": "198.51.100.9", "error": "cannot blacklist IP in trusted network: 198.51.100.9"},
            {"ip": "2001:db8::70", "status": "success"},
        ]
    }
    assert sysm.in_set("203.0.113.70") and sysm.in_set("2001:db8::70")
    r = post(sysm, "/security/whitelist/batch", [{"ip": "203.0.113.70"}, {"ip": "nope"}])
    assert r.json() == {
        "results": [
            {"ip": "203.0.113.70", "status": "success"},
            {"ip": "nope", "error": "invalid IP address: nope"},
        ]
    }
    assert not sysm.in_set("203.0.113.70")
    assert post(sysm, "/security/blacklist/batch", {"ip": "x"}).status_code == 400
    assert post(sysm, "/security/blacklist/batch", [{"reason": "no ip"}]).status_code == 400


# --- shards --------------------------------------------------------------------------------------


def test_failed_registrations_merge_every_shard(sysm: System) -> None:
    ips = [f"192.0.2.{n}" for n in range(10, 50)]
    assert {shard_of(ip, WORKERS) for ip in ips} == {0, 1}
    events = [
        register_failure(ip, user="1000", user_agent=PHONE_UA) for ip in ips for _ in range(3)
    ]
    sysm.fake.send_events(events)

    def all_seen() -> bool:
        data = sysm.client.get("/security/failed").json()
        return all(ip in data and data[ip]["count"] == 3 for ip in ips)

    assert wait_for(all_seen, 5), "not every address of both shards was merged"
    data = sysm.client.get("/security/failed").json()
    entry = data[ips[0]]
    assert set(entry) == {"count", "firstAttempt", "lastAttempt", "userIds", "domains"}
    assert entry["userIds"] == ["1000"]
    assert not any(sysm.in_set(ip) for ip in ips[:5]), "below the threshold yet banned"
    stats = sysm.client.get("/security/stats").json()
    time.sleep(1.1)  # security_ttl 1s: the next read is fresh
    stats = sysm.client.get("/security/stats").json()
    assert stats["failedRegistrations"] >= 120
    assert stats["lastFailedTime"] != "0001-01-01T00:00:00Z"


def test_security_stats_are_fresh_within_the_cache_ttl(sysm: System) -> None:
    before = sysm.client.get("/security/stats").json()["activeBlacklistEntries"]
    assert post(sysm, "/security/blacklist", {"ip": "203.0.113.80"}).status_code == 200
    assert wait_for(
        lambda: sysm.client.get("/security/stats").json()["activeBlacklistEntries"] == before + 1,
        timeout=2.5,
    )
    hits = sysm.client.get("/cache/stats").json()["security"]["hits"]
    sysm.client.get("/security/stats")
    sysm.client.get("/security/stats")
    assert sysm.client.get("/cache/stats").json()["security"]["hits"] >= hits + 1
    r = post(sysm, "/cache/security/clear")
    assert r.status_code == 200 and r.json() == {"status": "security cache cleared"}
    assert sysm.client.get("/cache/stats").json()["security"]["entries"] == 0


# --- ESL -----------------------------------------------------------------------------------


def test_esl_command_injection_never_reaches_freeswitch(sysm: System) -> None:
    r = post(sysm, "/security/esl/command", {"command": "status \n\napi system id"})
    assert r.status_code == 500
    r = post(sysm, "/security/esl/command", {"command": "status"})
    assert r.status_code == 200 and r.json()["command"] == "status"
    assert not any("system" in cmd for cmd in sysm.fake.commands), sysm.fake.commands
    assert any(cmd.startswith("api status") for cmd in sysm.fake.commands)


def test_log_level_is_validated_and_applied(sysm: System) -> None:
    r = post(sysm, "/security/esl/log-level", {"level": "verbose"})
    assert r.status_code == 400
    assert post(sysm, "/security/esl/log-level", {}).status_code == 400
    r = post(sysm, "/security/esl/log-level", {"level": "DEBUG"})
    assert r.status_code == 200
    assert r.json() == {"status": "success", "message": "ESL log level set to debug"}
    assert sysm.client.get("/security/esl").json()["logLevel"] == "debug"
    assert post(sysm, "/security/esl/log-level", {"level": "info"}).status_code == 200
    assert sysm.client.get("/security/esl").json()["logLevel"] == "info"


# --- untrusted patterns --------------------------------------------------------------------------


def test_untrusted_patterns_lifecycle(sysm: System) -> None:
    c = sysm.client
    assert c.get("/security/untrusted-networks/test/evil.example").json() == {
        "domain": "evil.example",
        "isUntrusted": True,
    }
    r = post(sysm, "/security/untrusted-networks", {"pattern": "*.bad.test"})
    assert r.status_code == 200
    assert r.json() == {
        "status": "success",
        "message": "Pattern '*.bad.test' added to untrusted networks",
    }
    r = post(sysm, "/security/untrusted-networks", {"pattern": "*.bad.test"})
    assert r.status_code == 400
    assert r.json() == {"error": 'untrusted pattern already exists: "*.bad.test"'}
    assert c.get("/security/untrusted-networks/test/x.bad.test").json()["isUntrusted"] is True
    assert c.get("/security/untrusted-networks/test/good.test").json()["isUntrusted"] is False
    # The workers follow the run-time pattern: one failure from that domain bans at once.
    sysm.fake.send_events(
        [register_failure("192.0.2.200", domain="pbx.bad.test", user_agent=PHONE_UA)]
    )
    assert wait_for(lambda: sysm.in_set("192.0.2.200"), 5), "run-time pattern not applied"
    assert post(sysm, "/security/untrusted-networks", {"pattern": "10.9.0.0/16"}).status_code == 200
    assert "10.9.0.0/16" in c.get("/security/untrusted-networks").json()
    assert delete(sysm, "/security/untrusted-networks/10.9.0.0/16").status_code == 200
    r = delete(sysm, "/security/untrusted-networks/*.bad.test")
    assert r.status_code == 200
    r = delete(sysm, "/security/untrusted-networks/*.bad.test")
    assert r.status_code == 404
    assert r.json() == {"error": 'untrusted pattern not found: "*.bad.test"'}
    assert c.get("/security/untrusted-networks").json() == ["evil.example"]
