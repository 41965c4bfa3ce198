"""The firewall's control ops: one request Struct and one reply type each.

The firewall's control socket binds a handler to every op here (its OpTable); the API,
the CLI and other roles call them with `shared.control.call` / `acall`.
"""

from __future__ import annotations

from shared.ops.base import Empty, Registry
from shared.ops.common import LogLevel, LogLevelRequest, Ping

FIREWALL = Registry("firewall")

PING = FIREWALL.op("ping", Empty, Ping, "who answers: role and pid")
LOG_LEVEL = FIREWALL.op("log_level", LogLevelRequest, LogLevel, "set this process's log level")


# reload (sup17)
from shared.ops.reload import DOC as _RELOAD_DOC  # noqa: E402  (kept with the op it serves)
from shared.ops.reload import FirewallReloaded, ReloadOrder  # noqa: E402

RELOAD = FIREWALL.op("reload", ReloadOrder, FirewallReloaded, _RELOAD_DOC)
