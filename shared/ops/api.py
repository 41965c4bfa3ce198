"""The API process's control ops (its `api.control` socket, fsguard_api/reload.py): the
supervisor pings it at takeover and sends it the `reload` order."""

from __future__ import annotations

from shared.ops.base import Empty, Registry
from shared.ops.common import Ping
from shared.ops.reload import DOC as RELOAD_DOC
from shared.ops.reload import Reloaded, ReloadOrder

API = Registry("api")

PING = API.op("ping", Empty, Ping, "who answers: role and pid")
RELOAD = API.op("reload", ReloadOrder, Reloaded, RELOAD_DOC)
