"""Reload without restart, coordinated by the supervisor.

Triggers: SIGHUP to the supervisor (systemd's ExecReload), the control op `reload` (POST
/security/reload, `fsguard reload`). One reload at a time:

1. re-read the config file and validate it (environment overrides included, as at
   start); a bad file changes nothing and the answer names the key and the value;
2. compare with the running config: changed keys that are reloadable
   (shared/reloadable.py) are applied, the others (ports, paths, worker count ...) are
   reported as needing a restart and left alone;
3. send the `reload` order to the firewall, every worker and the API over their control
   sockets, then apply it to the supervisor itself.

A child restarted later reads the file as it then is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from shared import addresses
from shared.config import Config, ConfigError, load_config
from shared.control import PeerUnavailable, arequest
from shared.logs import escape, set_level
from shared.messages import ControlReply
from shared.reloadable import ReloadOrder, apply_in_place, plan

if TYPE_CHECKING:
    from fsguard_supervisor.process import Supervisor

log = logging.getLogger(__name__)

PEER_TIMEOUT = 3.0


def without_secrets(config: Config) -> Config:
    """The config as sent to the other processes: the secrets no reload applies blanked."""
    return msgspec.structs.replace(
        config,
        server=msgspec.structs.replace(config.server, api_token="", api_token_file=""),
        security=msgspec.structs.replace(config.security, esl_password=""),
    )


class Reloader:
    def __init__(self, supervisor: Supervisor, config_path: str) -> None:
        self.sup = supervisor
        self.config_path = config_path
        self._lock = asyncio.Lock()
        self.reloads = 0
        self.failures = 0

    def on_sighup(self) -> None:
        self.sup.tasks.start("reload", self._signalled)

    async def _signalled(self) -> None:
        try:
            await self.reload("signal:SIGHUP")  # the outcome is logged and audited
        except Exception:
            log.exception("reload failed")

    def _peers(self) -> list[tuple[str, str]]:
        rd = self.sup.runtime_dir
        peers = [("firewall", addresses.firewall_control(rd))]
        peers += [(f"worker-{i}", addresses.worker_control(rd, i)) for i in range(self.sup.workers)]
        peers.append(("api", addresses.api_control(rd)))
        return peers

    async def _send(self, endpoint: str, args: dict[str, Any]) -> tuple[str, Any]:
        try:
            reply = await arequest(endpoint, "reload", args, timeout=PEER_TIMEOUT,
                                   ctx=self.sup.actx)  # fmt: skip
        except PeerUnavailable:
            return "unavailable (it reads the file when it starts)", None
        return ("ok", reply.data) if reply.ok else (f"error: {reply.error}", None)

    async def reload(self, actor: str) -> ControlReply:
        async with self._lock:
            return await self._reload(actor)

    async def _reload(self, actor: str) -> ControlReply:
        sup = self.sup
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            self.failures += 1
            message = f"configuration not reloaded, nothing changed: {exc}"
            log.error("%s", escape(message, 2000))
            sup.audit.record("reload", actor=actor, target=self.config_path,
                             outcome=f"refused: {exc}")  # fmt: skip
            return ControlReply(ok=False, error=message, status=400)
        steps = plan(sup.config, new)
        processes: dict[str, str] = {}
        lifted: list[str] = []
        if steps.apply:
            args = ReloadOrder(config=without_secrets(new), keys=steps.apply).to_args()
            names = self._peers()
            results = await asyncio.gather(*(self._send(e, args) for _, e in names))
            for (name, _), (outcome, data) in zip(names, results, strict=True):
                processes[name] = outcome
                if name == "firewall" and isinstance(data, dict):
                    lifted = [str(k) for k in data.get("liftedBans", [])]
            self._apply_here(ReloadOrder(config=new, keys=steps.apply))
            processes["supervisor"] = "ok"
        self.reloads += 1
        if steps.apply:
            message = f"reloaded {self.config_path}: applied {', '.join(steps.apply)}"
        else:
            message = f"reloaded {self.config_path}: no reloadable change"
        if lifted:
            message += f"; lifted {len(lifted)} ban(s) inside trusted networks"
        if steps.restart:
            message += f"; restart needed for {', '.join(steps.restart)}"
            log.warning("config keys changed that need a restart (not applied): %s",
                        ", ".join(steps.restart))  # fmt: skip
        failed = {n: r for n, r in processes.items() if r != "ok"}
        for name, result in failed.items():
            log.error("reload not applied by %s: %s", name, escape(result, 300))
        log.info("%s", message)
        sup.audit.record("reload", actor=actor, target=self.config_path,
                         outcome="ok" if not failed else "partial",
                         details={"applied": steps.apply, "restartRequired": steps.restart,
                                  "processes": processes})  # fmt: skip
        return ControlReply(ok=True, data={
            "status": "success" if not failed else "partial",
            "message": message,
            "applied": steps.apply,
            "restartRequired": steps.restart,
            "processes": processes,
            "liftedBans": lifted,
        })  # fmt: skip

    def _apply_here(self, order: ReloadOrder) -> None:
        sup = self.sup
        applied = apply_in_place(sup.config, order)
        if "logging.level" in applied:
            set_level(sup.config.logging.level)
        if "security.esl_log_level" in applied:
            sup.log_level = sup.config.security.esl_log_level
