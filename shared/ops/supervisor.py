"""The supervisor's control ops: one request Struct and one reply type each.

The supervisor's control socket binds a handler to every op here (its OpTable); the API,
the CLI and other roles call them with `shared.control.call` / `acall`.

`CommandResult` and `ReloadResult` are also REST responses (the API's models import them;
their names and docstrings are the OpenAPI schema's, so they stay as they are).
"""

from __future__ import annotations

import msgspec

from shared.ops.base import Empty, Registry
from shared.ops.common import Actor, LogLevel, LogLevelRequest, Ping

SUPERVISOR = Registry("supervisor")


class SupervisorEslStats(msgspec.Struct, kw_only=True):
    """Supervisor op "esl_stats": EslStats without eventsProcessed (the workers count it)."""

    connected: bool
    host: str
    port: str
    connectionAttempts: int
    connectionErrors: int
    eventsQueued: int
    eventsDropped: int
    workerCount: int
    queueLength: int
    queueCapacity: int
    logLevel: str


class EslCounters(msgspec.Struct, kw_only=True):
    """The ESL client's counters (the `esl` part of the supervisor's `stats`)."""

    connected: bool
    connection_attempts: int
    connection_errors: int
    auth_failures: int
    malformed_frames: int
    unexpected_replies: int
    commands_refused: int
    frames_received: int
    events_received: int
    reconnects: int
    last_error: str


class TaskStats(msgspec.Struct, kw_only=True):
    """The supervisor's background loops: running ones, failures and last error by name."""

    running: list[str]
    failures: dict[str, int]
    last_error: dict[str, str]


class ChildInfo(msgspec.Struct, kw_only=True):
    """One entry of the supervisor's "processes" / stats "children"."""

    name: str
    role: str
    pid: int | None
    restarts: int = 0
    lastExit: int | None = None


class SupervisorStats(msgspec.Struct, kw_only=True):
    """Supervisor op "stats": its counters (for /metrics, /system/stats and tests)."""

    esl: EslCounters
    events_queued: int
    events_without_ip: int
    dropped_per_worker: list[int]
    sent_per_worker: list[int]
    kills_sent: int
    kills_failed: int
    kills_dropped: int
    kills_in_flight: int
    tasks: TaskStats
    child_start_failures: int
    gateways: list[str]
    children: list[ChildInfo]
    uptime: float
    pid: int


class EslCommandRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    command: str  # re-checked against security.esl_allowed_commands by the supervisor
    actor: str = "api"


class CommandResult(msgspec.Struct, kw_only=True):
    command: str
    response: str


class ReloadResult(msgspec.Struct, kw_only=True):
    """POST /security/reload (fsguard addition)."""

    status: str
    message: str
    applied: list[str]  # reloadable keys that changed, applied in every process
    restartRequired: list[str]  # changed keys that need a restart; not applied
    processes: dict[str, str]  # process -> "ok" | "unavailable (...)" | "error: ..."
    liftedBans: list[str] = []  # bans inside newly trusted networks, lifted


PING = SUPERVISOR.op("ping", Empty, Ping, "who answers: role and pid")
LOG_LEVEL = SUPERVISOR.op("log_level", LogLevelRequest, LogLevel, "set this process's log level")
ESL_STATS = SUPERVISOR.op(
    "esl_stats", Empty, SupervisorEslStats, "the ESL connection and the dispatch queues"
)
STATS = SUPERVISOR.op("stats", Empty, SupervisorStats, "every counter of the supervisor")
PROCESSES = SUPERVISOR.op("processes", Empty, list[ChildInfo], "the supervised children")
RELOAD = SUPERVISOR.op(
    "reload", Actor, ReloadResult, "re-read the config file and apply it in every process"
)
RECONNECT = SUPERVISOR.op("reconnect", Empty, Empty, "drop and re-open the ESL connection")
ESL_COMMAND = SUPERVISOR.op(
    "esl_command", EslCommandRequest, CommandResult, "run an allowed FreeSWITCH API command"
)
