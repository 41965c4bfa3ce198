"""Two fsguard nodes sharing one real CrowdSec LAPI (issue 16), end to end.

    ns A: LAPI (0.0.0.0:8080) + `fsguard run` A ── veth 10.77.0.0/24 ── ns B: `fsguard run` B
                                                                          │ veth 203.0.113.0/24
                                                                     ns X: the attacker

Node A pushes (watcher) and pulls (bouncer); node B pulls, and pushes too. Each tree
runs every process (supervisor, workers, firewall, API, fleet connector) against its
own fake FreeSWITCH. A brute force on A must end in B's kernel set and packets from
it must be dropped on B.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fsguard_cli.simulator import register_failure
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from shared.ops.firewall_bans import UnbanRequest
from tests.crowdsec_lapi import Lapi, running_lapi
from tests.netns_helpers import netns, requires_netns, run_in, udp_reaches, veth_pair
from tests.system_helpers import (
    FSGUARD,
    PHONE_UA,
    RunningSystem,
    fsguard_config,
    running_fsguard,
    wait_for,
)

pytestmark = [pytest.mark.netns, requires_netns]

LAPI_PORT = 8080
POLL = "1s"
ATTACKER = "203.0.113.7"
B_ADDR = "203.0.113.1"
REACH = 1.0 + 2.0  # poll_interval + 2 s


def failures(ip: str, count: int = 6) -> list[Any]:
    return [register_failure(ip, user="1000", user_agent=PHONE_UA) for _ in range(count)]


def node_config(tmp: Path, esl_port: int, name: str, lapi_host: str, api_port: int) -> Any:
    return fsguard_config(
        tmp, esl_port, set_name=f"fsg-{name}", api_port=api_port, workers=1,
        security={
            "trusted_networks": ["127.0.0.0/8", "10.77.0.0/24"],
            "crowdsec": {
                "enabled": True, "lapi_url": f"http://{lapi_host}:{LAPI_PORT}",
                "machine_id": f"fsguard-{name}", "password": f"{name}-password-0123456789",
                "bouncer_api_key": f"{name}-bouncer-key-0123456789", "poll_interval": POLL,
                "timeout": "2s",
            },
        },
    )  # fmt: skip


@dataclass
class Fleet:
    lapi: Lapi
    a: RunningSystem
    b: RunningSystem
    ns_a: str
    ns_b: str
    ns_x: str
    tmp: Path
    b_stack: ExitStack

    def start_b(self) -> RunningSystem:
        tmp = self.tmp / "b"
        tmp.mkdir(exist_ok=True)
        self.b_stack = ExitStack()
        self.b = self.b_stack.enter_context(
            running_fsguard(
                tmp, lambda port: node_config(tmp, port, "b", "10.77.0.1", 18092), ns=self.ns_b
            )
        )
        return self.b


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    with ExitStack() as stack:
        ns_a = stack.enter_context(netns("csa"))
        ns_b = stack.enter_context(netns("csb"))
        ns_x = stack.enter_context(netns("csx"))
        veth_pair(ns_a, "10.77.0.1/24", ns_b, ["10.77.0.2/24"])
        veth_pair(ns_b, f"{B_ADDR}/24", ns_x, [f"{ATTACKER}/24"] +
                  [f"203.0.113.{i}/24" for i in range(100, 121)])  # fmt: skip
        lapi = stack.enter_context(
            running_lapi(tmp / "lapi", ns=ns_a, listen="0.0.0.0", port=LAPI_PORT)
        )
        for name in ("a", "b"):
            lapi.add_machine(f"fsguard-{name}", f"{name}-password-0123456789")
            lapi.add_bouncer(f"fsguard-{name}", f"{name}-bouncer-key-0123456789")
        (tmp / "a").mkdir()
        a = stack.enter_context(
            running_fsguard(
                tmp / "a",
                lambda port: node_config(tmp / "a", port, "a", "127.0.0.1", 18091),
                ns=ns_a,
            )
        )
        fleet = Fleet(lapi, a, a, ns_a, ns_b, ns_x, tmp, ExitStack())
        fleet.start_b()
        stack.callback(lambda: fleet.b_stack.close())
        yield fleet


def lapi_values(lapi: Lapi) -> set[str]:
    return {a["source"]["value"] for a in lapi.decisions()}


def test_fleet_connector_runs_in_both_trees(fleet: Fleet) -> None:
    for node in (fleet.a, fleet.b):
        roles = {c.role: c for c in node.children()}
        assert roles["fleet"].pid is not None


def test_brute_force_on_a_is_dropped_on_b(fleet: Fleet) -> None:
    assert udp_reaches(fleet.ns_x, ATTACKER, fleet.ns_b, B_ADDR, 5060), "path broken"
    fleet.a.fake.send_events(failures(ATTACKER))
    assert wait_for(lambda: fleet.a.in_set(ATTACKER), 2), "A did not ban"
    assert wait_for(lambda: fleet.b.in_set(ATTACKER), 1 + REACH), "B never got A's ban"
    assert not udp_reaches(fleet.ns_x, ATTACKER, fleet.ns_b, B_ADDR, 5060), "not dropped on B"
    listed = {a["source"]["value"]: a for a in fleet.lapi.decisions()}  # plain cscli
    assert listed[ATTACKER]["scenario"] == "fsguard/failed_auth"
    assert listed[ATTACKER]["decisions"][0]["origin"] == "crowdsec"
    assert fleet.b.firewall(fwo.BLACKLIST, Empty())[ATTACKER].origin == "crowdsec"
    a_entry = fleet.a.firewall(fwo.BLACKLIST, Empty())[ATTACKER]
    assert "origin" not in msgspec.to_builtins(a_entry)  # the node's own ban: the Go shape
    # B never pushes back what it pulled: the LAPI holds A's one alert for the address
    time.sleep(1.5)
    alerts = fleet.lapi.cscli("alerts", "list", "-i", ATTACKER) or []
    assert len(alerts) == 1


def test_operator_sees_origin_in_api_cli_and_metrics(fleet: Fleet) -> None:
    assert wait_for(lambda: fleet.b.in_set(ATTACKER), 1 + REACH)
    api = f"http://127.0.0.1:{fleet.b.api_port}"
    blacklist = json.loads(_in_ns(fleet.ns_b, ["curl", "-sf", f"{api}/security/blacklist"]))
    assert blacklist[ATTACKER]["origin"] == "crowdsec"
    listed = _in_ns(fleet.ns_b, [FSGUARD, "bans", "--origin", "crowdsec", "--api", api])
    assert ATTACKER in listed and "crowdsec" in listed
    local = _in_ns(fleet.ns_b, [FSGUARD, "bans", "--origin", "local", "--api", api])
    assert ATTACKER not in local
    a_api = f"http://127.0.0.1:{fleet.a.api_port}"
    a_local = _in_ns(fleet.ns_a, [FSGUARD, "bans", "--origin", "local", "--api", a_api])
    assert ATTACKER in a_local
    metrics = _in_ns(fleet.ns_b, ["curl", "-sf", f"{api}/metrics"])
    assert 'fsguard_bans_active_by_origin{origin="crowdsec"}' in metrics
    lag = [line for line in metrics.splitlines()
           if line.startswith("fsguard_crowdsec_sync_lag_seconds ")]  # fmt: skip
    assert lag and float(lag[0].split()[1]) < 5
    assert "fsguard_crowdsec_push_queue_depth 0.0" in metrics
    assert "fsguard_crowdsec_push_failures_total" in metrics


def _in_ns(ns: str, argv: list[str]) -> str:
    return run_in(ns, argv, check=True).stdout


def test_ban_latency_a_to_b(fleet: Fleet) -> None:
    """Figures for the closing note: 20 bans, ban on A's kernel → entry in B's kernel."""
    lat: list[float] = []
    rng = random.Random(16)
    for i in range(100, 120):
        ip = f"203.0.113.{i}"
        time.sleep(rng.uniform(0, 1.0))  # bans arrive at any point of B's poll cycle
        fleet.a.fake.send_events(failures(ip))
        assert wait_for(partial(fleet.a.in_set, ip), 2, 0.005)
        t0 = time.monotonic()
        assert wait_for(partial(fleet.b.in_set, ip), REACH + 2, 0.005), ip
        lat.append(time.monotonic() - t0)
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"\nA→B kernel latency over 20 bans (poll 1s): p50 {statistics.median(lat):.3f}s "
          f"p99 {p99:.3f}s max {lat[-1]:.3f}s")  # fmt: skip


def test_cscli_add_and_delete_reach_both_nodes(fleet: Fleet) -> None:
    fleet.lapi.cscli("decisions", "add", "-i", "192.0.2.99", "-d", "1h", "-R", "ops")
    assert wait_for(lambda: fleet.a.in_set("192.0.2.99") and fleet.b.in_set("192.0.2.99"), REACH)
    fleet.lapi.cscli("decisions", "delete", "-i", "192.0.2.99")
    assert wait_for(
        lambda: not fleet.a.in_set("192.0.2.99") and not fleet.b.in_set("192.0.2.99"), REACH
    )
    # a local unban of a pushed ban deletes it on the LAPI, so B lifts it too
    fleet.a.fake.send_events(failures("203.0.113.120"))
    assert wait_for(lambda: fleet.b.in_set("203.0.113.120"), 2 + REACH)
    fleet.a.firewall(fwo.UNBAN, UnbanRequest(ip="203.0.113.120"))
    assert wait_for(lambda: "203.0.113.120" not in lapi_values(fleet.lapi), 5)
    assert wait_for(lambda: not fleet.b.in_set("203.0.113.120"), REACH)


def test_lapi_down_loses_nothing(fleet: Fleet) -> None:
    fleet.lapi.stop()
    down = [f"198.51.{i}.7" for i in range(5)]  # not trusted in these configs
    try:
        for ip in down:
            fleet.a.fake.send_events(failures(ip))
        assert wait_for(lambda: all(fleet.a.in_set(ip) for ip in down), 3), "local ban blocked"
        time.sleep(30)  # the LAPI stays down for 30 s while the bans wait in A's outbox
        stats = fleet.a.firewall(fwo.STATS, Empty())
        depth = stats.crowdsec_push_queue_depth
        assert depth is not None and depth >= len(down)
        assert stats.crowdsec_push_failures >= 1
    finally:
        fleet.lapi.start()
    back = time.monotonic()
    assert wait_for(lambda: all(fleet.b.in_set(ip) for ip in down), 15 + REACH)
    print(f"\ncaught up {time.monotonic() - back:.1f}s after the LAPI returned")
    assert set(down) <= lapi_values(fleet.lapi)
    assert fleet.a.firewall(fwo.STATS, Empty()).crowdsec_push_queue_depth == 0


def test_b_restart_resyncs_from_the_startup_stream(fleet: Fleet) -> None:
    fleet.lapi.cscli("decisions", "add", "-i", "192.0.2.150", "-d", "1h")
    assert wait_for(lambda: fleet.b.in_set("192.0.2.150"), REACH)
    b = fleet.b
    fleet.b_stack.close()  # node B's whole tree stops; its kernel sets stay
    fleet.lapi.cscli("decisions", "add", "-i", "192.0.2.151", "-d", "1h")
    fleet.lapi.cscli("decisions", "delete", "-i", "192.0.2.150")
    assert b.in_set("192.0.2.150")  # the kernel keeps it while B is down
    fleet.start_b()
    assert wait_for(lambda: fleet.b.in_set("192.0.2.151"), 5 + REACH)
    assert wait_for(lambda: not fleet.b.in_set("192.0.2.150"), REACH)
    assert fleet.b.in_set(ATTACKER)  # still banned, from its store and the stream
