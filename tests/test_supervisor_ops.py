"""The supervisor's and the API's typed control ops, and the `reload` op of every role.

The tables: the real servers' OpTables bind every op of their registry (and nothing else,
which OpTable.bind refuses). Over the wire: one `fsguard run` tree (supervisor, 2 workers,
firewall, API) in a fresh network namespace against the fake FreeSWITCH; its real control
sockets answer the typed calls, and refuse a request whose args do not fit the op's
request Struct with 400 naming the field.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from fsguard_api.reload import op_table as api_table
from fsguard_supervisor.process import Supervisor
from fsguard_supervisor.supervisor_control import op_table as supervisor_table
from shared import addresses
from shared.config import Config
from shared.control import ControlError, call
from shared.ops import api as api_ops
from shared.ops import firewall as fw_ops
from shared.ops import supervisor as sup_ops
from shared.ops import worker as worker_ops
from shared.ops.api import API
from shared.ops.base import Empty, OpTable
from shared.ops.common import LogLevel, LogLevelRequest, Ping
from shared.ops.supervisor import SUPERVISOR, CommandResult, EslCommandRequest
from tests.control_helpers import raw_request
from tests.netns_helpers import requires_netns
from tests.system_helpers import RunningSystem, fsguard_config, running_fsguard, wait_for

WORKERS = 2


def _bound(table: OpTable) -> set[str]:
    return set(table.handlers) | set(table.async_handlers)


def test_supervisor_table_binds_every_op(tmp_path: Path) -> None:
    config = Config()
    config.paths.runtime_dir = str(tmp_path)

    async def build() -> OpTable:
        sup = Supervisor(config, str(tmp_path / "config.json"), manage_all=True)
        try:
            return supervisor_table(sup)
        finally:
            sup.ctx.term()

    table = asyncio.run(build())
    assert table.missing() == []
    assert _bound(table) == set(SUPERVISOR.names())
    assert set(table.async_handlers) == {"reload", "esl_command"}  # they wait on others


def test_api_table_binds_every_op() -> None:
    table = api_table(FastAPI(), Config())
    assert table.missing() == []
    assert _bound(table) == set(API.names()) == {"ping", "reload"}


# --- over the real sockets of a running tree ---------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("supops")

    def config(port: int) -> dict[str, Any]:
        return fsguard_config(tmp, port, set_name="fsg-sop", api_port=18131, workers=WORKERS)

    with running_fsguard(tmp, config, prefix="fsgsop") as rs:
        api = addresses.api_control(rs.runtime_dir)
        assert wait_for(lambda: _answers(api), 15), "the API's control socket never answered"
        yield rs


def _answers(endpoint: str) -> bool:
    try:
        call(endpoint, api_ops.PING, Empty(), timeout=0.5)
    except Exception:
        return False
    return True


@requires_netns
def test_supervisor_answers_every_op_typed(tree: RunningSystem) -> None:
    endpoint = addresses.supervisor_control(tree.runtime_dir)
    ping = call(endpoint, sup_ops.PING, Empty())
    assert ping.role == "supervisor" and ping.pid > 0
    stats = call(endpoint, sup_ops.STATS, Empty())
    names = {"firewall", "api", *(f"worker-{i}" for i in range(WORKERS))}
    assert {c.name for c in stats.children} == names and stats.pid == ping.pid
    assert len(stats.sent_per_worker) == WORKERS and "control" in stats.tasks.running
    assert {c.name for c in call(endpoint, sup_ops.PROCESSES, Empty())} == names
    esl = call(endpoint, sup_ops.ESL_STATS, Empty())
    assert esl.connected and esl.workerCount == WORKERS and esl.port.isdigit()
    assert call(endpoint, sup_ops.LOG_LEVEL, LogLevelRequest(level="DEBUG")) == LogLevel(
        level="debug"
    )
    assert call(endpoint, sup_ops.ESL_STATS, Empty()).logLevel == "debug"
    call(endpoint, sup_ops.LOG_LEVEL, LogLevelRequest(level="info"))
    result = call(endpoint, sup_ops.ESL_COMMAND, EslCommandRequest(command="status"))
    assert result == CommandResult(command="status", response=result.response)
    assert result.response.startswith("UP ")
    with pytest.raises(ControlError) as refused:
        call(endpoint, sup_ops.ESL_COMMAND, EslCommandRequest(command="reloadxml"))
    assert refused.value.status == 403  # re-checked by the supervisor (defence in depth)
    assert call(endpoint, sup_ops.RECONNECT, Empty()) == Empty()
    assert call(addresses.api_control(tree.runtime_dir), api_ops.PING, Empty()).role == "api"


@requires_netns
@pytest.mark.parametrize(
    ("peer", "op", "args", "field"),
    [
        ("supervisor", "esl_command", {"command": 5}, "command"),
        ("supervisor", "esl_command", {}, "command"),
        ("supervisor", "log_level", {"level": ["debug"]}, "level"),
        ("supervisor", "reload", {"actor": 7}, "actor"),
        ("api", "reload", {"keys": []}, "config"),
        ("worker", "reload", {"config": {}}, "keys"),
        ("firewall", "reload", {"config": {}, "keys": "logging.level"}, "keys"),
    ],
)
def test_bad_args_refused_400_naming_the_field(
    tree: RunningSystem, peer: str, op: str, args: dict[str, Any], field: str
) -> None:
    rd = tree.runtime_dir
    endpoint = {
        "supervisor": addresses.supervisor_control(rd),
        "api": addresses.api_control(rd),
        "worker": addresses.worker_control(rd, 1),
        "firewall": addresses.firewall_control(rd),
    }[peer]
    reply = raw_request(endpoint, op, args, timeout_ms=3000)
    assert (reply.ok, reply.status) == (False, 400), reply
    assert re.search(rf"`(\$\.)?{field}`", reply.error or ""), reply.error
    ping = {"supervisor": sup_ops.PING, "api": api_ops.PING, "worker": worker_ops.PING,
            "firewall": fw_ops.PING}[peer]  # fmt: skip
    assert isinstance(call(endpoint, ping, Empty()), Ping)  # still serving

