"""The supervisor's control socket (REP): the ops it answers for the API and the CLI.

Ops: every op of shared/ops/supervisor.py, bound on an OpTable (`op_table`). An ESL
command is re-checked against security.esl_allowed_commands here (defence in depth) and
audited with its outcome.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING

import zmq

from fsguard_supervisor.esl_client import EslNotConnected
from shared import addresses
from shared.control import ControlError, adispatch
from shared.logs import set_level
from shared.ops import supervisor as ops
from shared.ops.base import Empty, OpTable
from shared.ops.common import LogLevel, LogLevelRequest, Ping
from shared.ops.supervisor import (
    SUPERVISOR,
    CommandResult,
    EslCommandRequest,
    EslCounters,
    SupervisorEslStats,
    SupervisorStats,
)

if TYPE_CHECKING:
    from fsguard_supervisor.process import Supervisor

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def allowed_command(command: str, allowed: list[str]) -> bool:
    """Supervisor-side re-check of the API's allow-list (defence in depth)."""
    if not command or len(command.encode()) > 1024 or _CONTROL_CHARS.search(command):
        return False
    return any(entry and (command == entry or command.startswith(entry + " ")) for entry in allowed)


def esl_stats(sup: Supervisor) -> SupervisorEslStats:
    d = sup.dispatcher
    assert d is not None
    st = sup.esl.stats
    queue_length = sum(max(0, d.sent[i] - sup.worker_processed[i]) for i in range(sup.workers))
    return SupervisorEslStats(
        connected=st.connected,
        host=sup.config.security.esl_host,
        port=str(sup.config.security.esl_port),
        connectionAttempts=st.connection_attempts,
        connectionErrors=st.connection_errors,
        eventsQueued=d.events_queued,
        eventsDropped=d.events_dropped,
        workerCount=sup.workers,
        queueLength=queue_length,
        queueCapacity=d.queue_size * sup.workers,
        logLevel=sup.log_level,
    )


def supervisor_stats(sup: Supervisor) -> SupervisorStats:
    d = sup.dispatcher
    assert d is not None
    st = sup.esl.stats
    return SupervisorStats(
        esl=EslCounters(
            connected=st.connected,
            connection_attempts=st.connection_attempts,
            connection_errors=st.connection_errors,
            auth_failures=st.auth_failures,
            malformed_frames=st.malformed_frames,
            unexpected_replies=st.unexpected_replies,
            commands_refused=st.commands_refused,
            frames_received=st.frames_received,
            events_received=st.events_received,
            reconnects=st.reconnects,
            last_error=st.last_error,
        ),
        events_queued=d.events_queued,
        events_without_ip=d.events_without_ip,
        dropped_per_worker=list(d.dropped),
        sent_per_worker=list(d.sent),
        kills_sent=sup.kills.sent,
        kills_failed=sup.kills.failed,
        kills_dropped=sup.kills.dropped,
        kills_in_flight=sup.kills.in_flight,
        tasks=sup.tasks.snapshot(),
        child_start_failures=sup.children.start_failures,
        gateways=list(sup.gateways.addresses),
        children=sup.children.snapshot(),
        uptime=time.time() - sup.started,
        pid=os.getpid(),
    )


def log_level(sup: Supervisor, req: LogLevelRequest) -> LogLevel:
    try:
        set_level(req.level)
    except ValueError as exc:
        raise ControlError(str(exc), 400) from None
    sup.log_level = req.level.lower()
    return LogLevel(level=sup.log_level)


def reconnect(sup: Supervisor) -> Empty:
    sup.esl.request_reconnect()
    return Empty()


async def esl_command(sup: Supervisor, req: EslCommandRequest) -> CommandResult:
    """Run an allowed command on FreeSWITCH; audited with its outcome."""
    command, actor = req.command, req.actor or "api"
    if not allowed_command(command, sup.config.security.esl_allowed_commands):
        raise ControlError(f"command not allowed: {command!r}", 403)

    def record(outcome: str, **details: str) -> None:
        sup.audit.record("esl_command", actor=actor, target=command, outcome=outcome,
                         details=details or None)  # fmt: skip

    try:
        response = await sup.esl.api(command)
    except EslNotConnected:
        record("failed: not connected")
        raise ControlError("not connected to FreeSWITCH ESL", 503) from None
    except TimeoutError:
        record("failed: timeout")
        raise ControlError("command execution timeout", 504) from None
    except Exception as exc:
        record(f"failed: {exc}")
        raise ControlError(str(exc), 500) from None
    record("-ERR" if response.startswith("-ERR") else "ok", response=response[:200])
    return CommandResult(command=command, response=response)


def op_table(sup: Supervisor) -> OpTable:
    """The supervisor's handler for every op of shared/ops/supervisor.py."""
    table = OpTable(SUPERVISOR)
    table.bind(ops.PING, lambda _: Ping(role="supervisor", pid=os.getpid()))
    table.bind(ops.ESL_STATS, lambda _: esl_stats(sup))
    table.bind(ops.STATS, lambda _: supervisor_stats(sup))
    table.bind(ops.PROCESSES, lambda _: sup.children.snapshot())
    table.bind(ops.LOG_LEVEL, lambda req: log_level(sup, req))
    table.bind(ops.RECONNECT, lambda _: reconnect(sup))
    table.bind_async(ops.RELOAD, lambda req: sup.reloader.reload(req.actor or "control"))
    table.bind_async(ops.ESL_COMMAND, lambda req: esl_command(sup, req))
    return table


async def control_loop(sup: Supervisor) -> None:
    table = op_table(sup)
    sock = sup.actx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(addresses.supervisor_control(sup.runtime_dir))
    try:
        while True:
            await sock.send(await adispatch(table, await sock.recv()))
    finally:
        sock.close(linger=0)
