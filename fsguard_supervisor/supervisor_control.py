"""The supervisor's control socket (REP): the ops it answers for the API and the CLI.

Ops: ping, esl_stats, stats, processes, reload, reconnect, log_level, esl_command. An ESL
command is re-checked against security.esl_allowed_commands here (defence in depth) and
audited with its outcome.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from fsguard_supervisor.esl_client import EslNotConnected
from shared import addresses
from shared.control import ControlError
from shared.logs import set_level
from shared.messages import ControlReply, ControlRequest, decode, encode

if TYPE_CHECKING:
    from fsguard_supervisor.process import Supervisor

log = logging.getLogger("fsguard_supervisor.process")  # the name operators filter on

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def allowed_command(command: str, allowed: list[str]) -> bool:
    """Supervisor-side re-check of the API's allow-list (defence in depth)."""
    if not command or len(command.encode()) > 1024 or _CONTROL_CHARS.search(command):
        return False
    return any(entry and (command == entry or command.startswith(entry + " ")) for entry in allowed)


def esl_stats(sup: Supervisor) -> dict[str, Any]:
    d = sup.dispatcher
    assert d is not None
    st = sup.esl.stats
    queue_length = sum(max(0, d.sent[i] - sup.worker_processed[i]) for i in range(sup.workers))
    return {
        "connected": st.connected,
        "host": sup.config.security.esl_host,
        "port": str(sup.config.security.esl_port),
        "connectionAttempts": st.connection_attempts,
        "connectionErrors": st.connection_errors,
        "eventsQueued": d.events_queued,
        "eventsDropped": d.events_dropped,
        "workerCount": sup.workers,
        "queueLength": queue_length,
        "queueCapacity": d.queue_size * sup.workers,
        "logLevel": sup.log_level,
    }


def supervisor_stats(sup: Supervisor) -> dict[str, Any]:
    d = sup.dispatcher
    assert d is not None
    st = sup.esl.stats
    return {
        "esl": {
            "connected": st.connected,
            "connection_attempts": st.connection_attempts,
            "connection_errors": st.connection_errors,
            "auth_failures": st.auth_failures,
            "malformed_frames": st.malformed_frames,
            "unexpected_replies": st.unexpected_replies,
            "commands_refused": st.commands_refused,
            "frames_received": st.frames_received,
            "events_received": st.events_received,
            "reconnects": st.reconnects,
            "last_error": st.last_error,
        },
        "events_queued": d.events_queued,
        "events_without_ip": d.events_without_ip,
        "dropped_per_worker": list(d.dropped),
        "sent_per_worker": list(d.sent),
        "kills_sent": sup.kills.sent,
        "kills_failed": sup.kills.failed,
        "kills_dropped": sup.kills.dropped,
        "kills_in_flight": sup.kills.in_flight,
        "tasks": sup.tasks.snapshot(),
        "child_start_failures": sup.children.start_failures,
        "gateways": list(sup.gateways.addresses),
        "children": sup.children.snapshot(),
        "uptime": time.time() - sup.started,
        "pid": os.getpid(),
    }


async def handle_control(sup: Supervisor, req: ControlRequest) -> ControlReply:
    op, args = req.op, req.args
    if op == "ping":
        return ControlReply(ok=True, data={"role": "supervisor", "pid": os.getpid()})
    if op == "esl_stats":
        return ControlReply(ok=True, data=esl_stats(sup))
    if op == "stats":
        return ControlReply(ok=True, data=supervisor_stats(sup))
    if op == "processes":
        return ControlReply(ok=True, data=sup.children.snapshot())
    if op == "reload":
        return await sup.reloader.reload(str(args.get("actor") or "control"))
    if op == "reconnect":
        sup.esl.request_reconnect()
        return ControlReply(ok=True, data={})
    if op == "log_level":
        level = str(args.get("level", ""))
        try:
            set_level(level)
        except ValueError as exc:
            return ControlReply(ok=False, error=str(exc), status=400)
        sup.log_level = level.lower()
        return ControlReply(ok=True, data={"level": sup.log_level})
    if op == "esl_command":
        command = str(args.get("command", ""))
        if not allowed_command(command, sup.config.security.esl_allowed_commands):
            return ControlReply(ok=False, error=f"command not allowed: {command!r}", status=403)
        actor = str(args.get("actor") or "api")
        try:
            response = await sup.esl.api(command)
        except EslNotConnected:
            sup.audit.record(
                "esl_command", actor=actor, target=command, outcome="failed: not connected"
            )
            return ControlReply(ok=False, error="not connected to FreeSWITCH ESL", status=503)
        except TimeoutError:
            sup.audit.record("esl_command", actor=actor, target=command, outcome="failed: timeout")
            return ControlReply(ok=False, error="command execution timeout", status=504)
        except Exception as exc:
            sup.audit.record("esl_command", actor=actor, target=command, outcome=f"failed: {exc}")
            return ControlReply(ok=False, error=str(exc), status=500)
        sup.audit.record(
            "esl_command",
            actor=actor,
            target=command,
            outcome="-ERR" if response.startswith("-ERR") else "ok",
            details={"response": response[:200]},
        )
        return ControlReply(ok=True, data={"command": command, "response": response})
    return ControlReply(ok=False, error=f"unknown op {op!r}", status=404)


async def control_loop(sup: Supervisor) -> None:
    sock = sup.actx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(addresses.supervisor_control(sup.runtime_dir))
    try:
        while True:
            raw = await sock.recv()
            try:
                req = decode(raw)
                if not isinstance(req, ControlRequest):
                    raise ControlError("not a control request")
                reply = await handle_control(sup, req)
            except (msgspec.DecodeError, msgspec.ValidationError, ControlError) as exc:
                reply = ControlReply(ok=False, error=f"bad request: {exc}", status=400)
            except Exception as exc:
                log.exception("control op failed")
                reply = ControlReply(ok=False, error=f"internal error: {exc}", status=500)
            await sock.send(encode(reply))
    finally:
        sock.close(linger=0)
