"""Reload without restart and whitelisted networks, through the real process tree.

One `fsguard run` tree (supervisor, 2 workers, firewall, API) in a fresh network
namespace against the fake FreeSWITCH; the REST API is reached over real HTTP through a
forwarder, the kernel sets are read with `ipset test` in the namespace. The tests of a
module share the tree and run in file order (each leaves the config file valid).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fsguard_cli.simulator import register_failure
from shared import addresses
from shared.control import call
from shared.iputil import shard_of
from shared.ops import worker
from shared.ops.base import Empty
from shared.ops.worker import WorkerStats
from tests.api_http import api_client
from tests.netns_helpers import requires_netns
from tests.system_helpers import (
    FSGUARD,
    PHONE_UA,
    RunningSystem,
    fsguard_config,
    running_fsguard,
    wait_for,
)

pytestmark = [requires_netns]

API_PORT = 18111
TOKEN = "reload-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKERS = 2


def _config(tmp: Path, esl_port: int) -> dict[str, Any]:
    return fsguard_config(
        tmp, esl_port, set_name="fsg-rld", api_port=API_PORT, workers=WORKERS,
        server={"api_token": TOKEN},
        cache={"enabled": False},
        security={"chandaemon": {"allowed_api_ips": ["127.0.0.1"]}},
    )  # fmt: skip


class Tree:
    def __init__(self, rs: RunningSystem, client: httpx.Client, url: str) -> None:
        self.rs, self.client, self.url = rs, client, url

    def write_config(self, **changes: dict[str, Any]) -> None:
        """The running config with `changes` merged per section, written to its file."""
        cfg = json.loads(json.dumps(self.rs.config))
        for section, values in changes.items():
            cfg[section] = {**cfg.get(section, {}), **values}
        self.rs.config_path.write_text(json.dumps(cfg))

    def commit_config(self, **changes: dict[str, Any]) -> None:
        self.write_config(**changes)
        self.rs.config = json.loads(self.rs.config_path.read_text())

    def reload(self) -> httpx.Response:
        return self.client.post("/security/reload", headers=AUTH)

    def fail(self, ip: str, count: int) -> None:
        self.rs.fake.send_events(
            [register_failure(ip, user="1000", user_agent=PHONE_UA) for _ in range(count)]
        )

    def failed_count(self, ip: str) -> int:
        entry = self.client.get("/security/failed").json().get(ip)
        return int(entry["count"]) if entry else 0

    def worker_stats(self, ip: str) -> WorkerStats:
        index = shard_of(ip, WORKERS)
        assert index is not None
        endpoint = addresses.worker_control(self.rs.runtime_dir, index)
        return call(endpoint, worker.STATS, Empty(), timeout=2)

    def blacklisted(self, ip: str) -> bool:
        return ip in self.client.get("/security/blacklist").json()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    tmp = tmp_path_factory.mktemp("reload")
    with running_fsguard(tmp, lambda port: _config(tmp, port), prefix="fsgrld") as rs:
        assert rs.ns is not None
        with api_client(rs.ns, API_PORT, timeout=30) as (url, client):
            yield Tree(rs, client, url)


# --- reload -------------------------------------------------------------------------------


def test_counters_survive_reload_and_restart_keys_are_reported(tree: Tree) -> None:
    ip = "203.0.113.20"
    tree.fail(ip, 3)
    assert wait_for(lambda: tree.failed_count(ip) == 3, 10)

    tree.commit_config(logging={"level": "debug"}, server={"port": API_PORT + 1},
                       security={"rate_limit": {"call_rate_limit": 33}})  # fmt: skip
    reply = tree.reload()
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["applied"] == ["security.rate_limit.call_rate_limit", "logging.level"]
    assert body["restartRequired"] == ["server.port"]
    assert body["processes"] == {
        "firewall": "ok", "worker-0": "ok", "worker-1": "ok", "api": "ok", "supervisor": "ok",
    }  # fmt: skip
    assert tree.client.get("/security/rate-limit").json()["callRateLimit"] == 33

    bans = tree.worker_stats(ip).active_bans
    tree.fail(ip, 1)  # the 4th failure, with the window kept across the reload
    assert wait_for(lambda: tree.failed_count(ip) == 4, 10)
    assert tree.worker_stats(ip).active_bans == bans  # the rule ran: not banned at 4 of 5
    tree.fail(ip, 1)
    assert wait_for(lambda: tree.rs.in_set(ip), 10), "not banned at the 5th failure"
    assert tree.blacklisted(ip)


def test_lowered_threshold_takes_effect_and_bans_stay(tree: Tree) -> None:
    tree.commit_config(security={"max_failed_attempts": 3})
    reply = tree.reload()
    assert reply.status_code == 200, reply.text
    assert reply.json()["applied"] == ["security.max_failed_attempts"]
    ip = "203.0.113.21"
    tree.fail(ip, 3)
    assert wait_for(lambda: tree.rs.in_set(ip), 10), "lowered threshold not applied"
    assert tree.rs.in_set("203.0.113.20") and tree.blacklisted("203.0.113.20")


def test_bad_config_changes_nothing_and_names_the_key(tree: Tree) -> None:
    tree.write_config(security={"max_failed_attempts": 2, "trusted_networks": ["10.0.0.300/8"]})
    reply = tree.reload()
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert "security.trusted_networks[0]" in error and "10.0.0.300/8" in error
    assert "nothing changed" in error

    tree.rs.config_path.write_text("{not json")
    reply = tree.reload()
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]

    ip = "203.0.113.22"  # the threshold is still 3, not the bad file's 2
    bans = tree.worker_stats(ip).active_bans
    tree.fail(ip, 2)
    assert wait_for(lambda: tree.failed_count(ip) == 2, 10)
    assert tree.worker_stats(ip).active_bans == bans
    tree.fail(ip, 1)
    assert wait_for(lambda: tree.rs.in_set(ip), 10)
    tree.commit_config()  # a valid file again


def test_cli_reload_exit_codes(tree: Tree) -> None:
    argv = [FSGUARD, "reload", "--api", tree.url, "--token", TOKEN]
    tree.write_config(security={"max_failed_attempts": 0})
    bad = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad.stderr
    assert "security.max_failed_attempts" in bad.stderr and "0" in bad.stderr

    tree.commit_config(security={"scanner_user_agents": ["evilscan"]})
    good = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["applied"] == ["security.scanner_user_agents"]


def test_sighup_reloads_and_the_tree_survives(tree: Tree) -> None:
    before = {c.name: c.pid for c in tree.rs.children() if c.pid is not None}
    tree.commit_config(security={"max_failed_attempts": 2})
    log_size = tree.rs.log_path.stat().st_size
    os.kill(tree.rs.proc.pid, signal.SIGHUP)

    def reloaded() -> bool:
        with open(tree.rs.log_path, "rb") as fh:
            fh.seek(log_size)
            return b"applied security.max_failed_attempts" in fh.read()

    assert wait_for(reloaded, 10), "SIGHUP did not reload"
    assert tree.rs.proc.poll() is None
    for name in ("firewall", "worker-0", "api"):  # a terminal's hangup reaches them too
        os.kill(before[name], signal.SIGHUP)
    assert tree.client.get("/security/whitelist").status_code == 200  # api, firewall, workers
    assert {c.name: c.pid for c in tree.rs.children() if c.pid is not None} == before
    ip = "203.0.113.23"
    tree.fail(ip, 2)
    assert wait_for(lambda: tree.rs.in_set(ip), 10)


def test_trusted_networks_reload(tree: Tree) -> None:
    ip, banned = "203.0.113.99", "203.0.113.98"
    assert tree.client.post("/security/blacklist", json={"ip": banned},
                            headers=AUTH).status_code == 200  # fmt: skip
    assert tree.rs.in_set(banned)
    trusted = [*tree.rs.config["security"]["trusted_networks"], "203.0.113.96/29"]
    tree.commit_config(security={"trusted_networks": trusted})
    body = tree.reload().json()
    assert body["applied"] == ["security.trusted_networks"]
    assert body["liftedBans"] == [banned]  # trusted networks are never banned
    assert not tree.rs.in_set(banned) and not tree.blacklisted(banned)
    tree.fail(ip, 4)
    lookup = tree.client.get(f"/security/whitelist/{ip}").json()
    assert lookup["trustedNetwork"] == "203.0.113.96/29"
    assert wait_for(lambda: tree.worker_stats(ip).trusted_skipped >= 4, 10)
    assert not tree.rs.in_set(ip) and tree.failed_count(ip) == 0


def test_untrusted_networks_reload_reaches_firewall_and_workers(tree: Tree) -> None:
    tree.commit_config(security={"untrusted_networks": ["evil.example"]})
    assert tree.reload().json()["applied"] == ["security.untrusted_networks"]
    assert tree.client.get("/security/untrusted-networks").json() == ["evil.example"]
    ip = "203.0.113.30"
    tree.rs.fake.send_events([register_failure(ip, domain="evil.example", user_agent=PHONE_UA)])
    assert wait_for(lambda: tree.rs.in_set(ip), 10), "the workers did not get the pattern"
    tree.commit_config(security={"untrusted_networks": []})
    assert tree.reload().status_code == 200
    assert tree.client.get("/security/untrusted-networks").json() == []


def test_allowed_api_ips_reload_reaches_the_api(tree: Tree) -> None:
    tree.commit_config(security={"chandaemon": {"allowed_api_ips": ["192.0.2.1"]}})
    assert tree.reload().status_code == 200
    denied = tree.reload()  # the API now refuses this client: its allow-list was reloaded
    assert denied.status_code == 403, denied.text
    tree.commit_config(security={"chandaemon": {"allowed_api_ips": ["127.0.0.1"]}})
    os.kill(tree.rs.proc.pid, signal.SIGHUP)
    assert wait_for(lambda: tree.reload().status_code == 200, 10)


# --- whitelisted networks --------------------------------------------------------------------


def test_whitelisted_network_lists_and_lifts_bans_and_is_never_banned(tree: Tree) -> None:
    c = tree.client
    banned = "203.0.113.70"
    assert c.post("/security/blacklist", json={"ip": banned}, headers=AUTH).status_code == 200
    assert tree.rs.in_set(banned)

    reply = c.post("/security/whitelist", json={"ip": "203.0.113.64/26"}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert reply.json()["bansInside"] == [banned] and reply.json()["liftedBans"] == []
    assert tree.rs.in_set(banned), "a ban inside was lifted without lift_bans"

    reply = c.post("/security/whitelist", json={"ip": "203.0.113.64/26", "lift_bans": True},
                   headers=AUTH)  # fmt: skip
    assert reply.json()["liftedBans"] == [banned]
    assert not tree.rs.in_set(banned) and not tree.blacklisted(banned)

    listed = c.get("/security/whitelist").json()
    assert listed["203.0.113.64/26"]["ip"] == "203.0.113.64/26"
    refused = c.post("/security/blacklist", json={"ip": "203.0.113.81"}, headers=AUTH)
    assert refused.status_code == 400 and "whitelisted" in refused.json()["error"]
    assert c.get("/security/whitelist/203.0.113.81").json()["whitelisted"] is True

    inside = "203.0.113.80"
    tree.fail(inside, 10)
    assert wait_for(lambda: tree.worker_stats(inside).whitelist_network_skipped >= 10, 10)
    assert not tree.rs.in_set(inside) and tree.failed_count(inside) == 0

    export = subprocess.run(  # the store holds the network (read back through the firewall)
        [FSGUARD, "bans", "export", "--config", str(tree.rs.config_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert "203.0.113.64/26" in json.loads(export.stdout)["whitelist"]

    gone = c.delete("/security/whitelist/203.0.113.64/26", headers=AUTH)
    assert gone.status_code == 200, gone.text
    assert "203.0.113.64/26" not in c.get("/security/whitelist").json()
    tree.fail(inside, 2)  # threshold 2 (SIGHUP test): banned again once the network is gone
    assert wait_for(lambda: tree.rs.in_set(inside), 10)


def test_whitelisted_ipv6_network_with_ttl_and_cli(tree: Tree) -> None:
    reply = tree.client.post("/security/whitelist",
                             json={"ip": "2001:DB8:5::/48", "ttl": "2h"}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    entry = tree.client.get("/security/whitelist").json()["2001:db8:5::/48"]
    assert entry["permanent"] is False and entry["expiresAt"] != "0001-01-01T00:00:00Z"
    bad = tree.client.post("/security/whitelist", json={"ip": "2001:db8:5::/129"}, headers=AUTH)
    assert bad.status_code == 400

    argv = [FSGUARD, "whitelist", "add", "198.18.0.0/15", "--permanent", "--lift-bans",
            "--api", tree.url, "--token", TOKEN]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert tree.client.get("/security/whitelist").json()["198.18.0.0/15"]["permanent"] is True
    argv = [FSGUARD, "whitelist", "remove", "198.18.0.0/15", "--api", tree.url, "--token", TOKEN]
    assert subprocess.run(argv, capture_output=True, text=True, timeout=60).returncode == 0
    assert "198.18.0.0/15" not in tree.client.get("/security/whitelist").json()
