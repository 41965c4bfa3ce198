"""issue 12 end to end: the real `fsguard run` tree in a network namespace (real ipset),
fed by the fake FreeSWITCH over ESL, asked over HTTP.

One tree, the points in turn: a FreeSWITCH gateway (asked with `sofia xmlstatus
gateway`) is not banned for a scanner's challenge while another source is; a simulated
rule records and shows its decision but touches neither the kernel nor the call; the
ban budget alerts while banning continues; registrations count per exchange; extension
scanning bans; the ESL hardening warning shows in /security/status and /metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fsguard_cli.simulator import (
    SimGateway,
    channel_create,
    channel_hangup_complete,
    pre_register,
    register_attempt,
)
from shared.ops.supervisor import SupervisorStats
from tests.api_http import api_client
from tests.netns_helpers import requires_netns
from tests.system_helpers import RunningSystem, fsguard_config, running_fsguard, wait_for

pytestmark = [requires_netns]

SET_NAME = "fsg-det"
API_PORT = 18097
GATEWAY = "203.0.113.5"
SCANNER = "203.0.113.7"
SECOND = "203.0.113.8"
TOLL = "203.0.113.9"
PHONE = "203.0.113.20"
WALKER = "203.0.113.30"
PHONE_UA = "Yealink SIP-T46S 66.86.0.15"


def _config(tmp: Path, esl_port: int) -> dict[str, Any]:
    return fsguard_config(
        tmp, esl_port, set_name=SET_NAME, api_port=API_PORT, workers=2,
        security={
            "gateway_refresh_interval": "300ms",
            "max_bans_per_minute": 1,
            "rules": {"toll_fraud": {"mode": "simulate"}},
        },
    )  # fmt: skip


class Tree:
    def __init__(self, rs: RunningSystem, client: httpx.Client) -> None:
        self.rs, self.client = rs, client

    def metric(self, pattern: str) -> float:
        text = self.client.get("/metrics").text
        values = [float(m) for m in re.findall(pattern + r" ([0-9.e+]+)$", text, re.M)]
        return sum(values)

    def supervisor_stats(self) -> SupervisorStats:
        return self.rs.supervisor_stats()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    tmp = tmp_path_factory.mktemp("detection")
    with running_fsguard(tmp, lambda port: _config(tmp, port), prefix="fsgdet") as rs:
        assert rs.ns is not None
        rs.fake.server.gateways = [SimGateway(name="carrier", proxy=f"sip:{GATEWAY}")]
        with api_client(rs.ns, API_PORT) as (_, client):
            yield Tree(rs, client)


def test_gateway_is_protected_other_scanner_banned_budget_alerts(tree: Tree) -> None:
    rs = tree.rs
    assert wait_for(lambda: tree.supervisor_stats().gateways == [GATEWAY], 10)
    assert "api sofia xmlstatus gateway" in rs.fake.commands
    rs.fake.send_event(pre_register(GATEWAY, user_agent="friendly-scanner"))
    rs.fake.send_event(pre_register(SCANNER, user_agent="friendly-scanner"))
    assert wait_for(lambda: rs.in_set(SCANNER), 10)
    assert wait_for(lambda: tree.metric(r'fsguard_spoofing_suspected_total\{[^}]*\}') >= 1, 10)
    assert not rs.in_set(GATEWAY)
    assert GATEWAY not in tree.client.get("/security/blacklist").json()
    # a second automatic ban within the minute: over a budget of 1, and still applied
    rs.fake.send_event(pre_register(SECOND, user_agent="sipvicious"))
    assert wait_for(lambda: rs.in_set(SECOND), 10)
    assert wait_for(lambda: tree.metric(r"fsguard_ban_budget_exceeded_total\{[^}]*\}") >= 1, 10)
    assert "ban budget exceeded" in rs.log_path.read_text(errors="replace")


def test_simulated_rule_records_but_never_touches_kernel_or_call(tree: Tree) -> None:
    rs = tree.rs
    uuid = "6a1b9f0e-0000-4000-8000-00000000e012"
    rs.fake.send_event(channel_create(TOLL, uuid, destination="011972599999", context="public",
                                      profile="external", authorized=False))  # fmt: skip

    def shown() -> bool:
        items = tree.client.get("/security/simulated").json()
        return any(d["ip"] == TOLL and d["rule"] == "toll_fraud" and d["simulated"] for d in items)

    assert wait_for(shown, 10)
    pattern = r'fsguard_simulated_decisions_total\{[^}]*rule="toll_fraud",simulated="true"[^}]*\}'
    assert wait_for(lambda: tree.metric(pattern) == 1, 10)
    assert not rs.in_set(TOLL)
    assert TOLL not in tree.client.get("/security/blacklist").json()
    assert f"api uuid_kill {uuid}" not in rs.fake.commands
    audit = (rs.state_dir / "audit.log").read_text()
    assert '"action":"simulated_ban"' in audit and TOLL in audit


def test_registrations_count_per_exchange(tree: Tree) -> None:
    rs = tree.rs
    for i in range(10):  # ten challenged and answered registrations in a minute: allowed
        call_id = f"reg-{i}@phone"
        rs.fake.send_event(pre_register(PHONE, user_agent=PHONE_UA, call_id=call_id))
        rs.fake.send_event(register_attempt(PHONE, user_agent=PHONE_UA, call_id=call_id,
                                            auth_result="RENEWED"))  # fmt: skip

    def counted() -> int:
        snap = tree.client.get("/security/rate-limit/registrations").json()
        return int(snap.get(PHONE, {}).get("count", 0))

    assert wait_for(lambda: counted() == 10, 10)
    assert not rs.in_set(PHONE)
    rs.fake.send_event(pre_register(PHONE, user_agent=PHONE_UA, call_id="reg-11@phone"))
    assert wait_for(lambda: rs.in_set(PHONE), 10)
    reason = tree.client.get("/security/blacklist").json()[PHONE]["reason"]
    assert reason == "registration rate limit exceeded (11 in 1m0s)"


def test_extension_scanning_is_banned(tree: Tree) -> None:
    rs = tree.rs
    for i in range(10):
        rs.fake.send_event(channel_hangup_complete(
            WALKER, f"6a1b9f0e-0000-4000-8000-0000000001{i:02d}", cause="NO_ROUTE_DESTINATION",
            destination=str(2000 + i), authorized=False,
        ))  # fmt: skip
    assert wait_for(lambda: rs.in_set(WALKER), 10)
    entry = tree.client.get("/security/blacklist").json()[WALKER]
    assert entry["reason"].startswith("Extension scanning: 10 calls")


def test_esl_hardening_warning_in_status_and_metrics(tree: Tree) -> None:
    status = tree.client.get("/security/status").json()
    assert set(status["eslWarnings"]) == {"default_password"}
    assert tree.metric(r'fsguard_esl_hardening_warning\{check="default_password"\}') == 1
    assert tree.metric(r'fsguard_esl_hardening_warning\{check="exposed_host"\}') == 0
    assert "ESL hardening (default_password)" in tree.rs.log_path.read_text(errors="replace")
