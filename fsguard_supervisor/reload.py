"""Reload without restart, coordinated by the supervisor.

Triggers: SIGHUP to the supervisor (systemd's ExecReload), the control op `reload` (POST
/security/reload, `fsguard reload`). One reload at a time:

1. re-read the config file and validate it (environment overrides included, as at
   start); a bad file changes nothing and the answer names the key and the value;
2. compare with the running config: changed keys that are reloadable
   (shared/reloadable.py) are applied, the others (ports, paths, worker count ...) are
   reported as needing a restart and left alone;
3. send the typed `reload` order (shared/ops/reload.py) to the firewall, every worker and
   the API over their control sockets, then apply it to the supervisor itself.

A child restarted later reads the file as it then is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import msgspec

from shared import addresses
from shared.config import Config, ConfigError, load_config
from shared.control import ControlError, PeerReplyInvalid, PeerUnavailable, acall
from shared.logs import escape, set_level
from shared.ops.api import RELOAD as API_RELOAD
from shared.ops.firewall import RELOAD as FIREWALL_RELOAD
from shared.ops.reload import FirewallReloaded
from shared.ops.supervisor import ReloadResult
from shared.ops.worker import RELOAD as WORKER_RELOAD
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

    async def _send(self, order: ReloadOrder) -> tuple[dict[str, str], list[str]]:
        """Send the order to the firewall, every worker and the API, concurrently: each
        one's outcome ("ok", "unavailable (...)", "error: ..."), and the bans the firewall
        lifted."""
        rd, ctx, t = self.sup.runtime_dir, self.sup.actx, PEER_TIMEOUT
        names = ["firewall", *(f"worker-{i}" for i in range(self.sup.workers)), "api"]
        firewall = acall(addresses.firewall_control(rd), FIREWALL_RELOAD, order, t, ctx)
        workers = [acall(addresses.worker_control(rd, i), WORKER_RELOAD, order, t, ctx)
                   for i in range(self.sup.workers)]  # fmt: skip
        api = acall(addresses.api_control(rd), API_RELOAD, order, t, ctx)
        results = await asyncio.gather(firewall, *workers, api, return_exceptions=True)
        processes: dict[str, str] = {}
        lifted: list[str] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, PeerUnavailable):
                processes[name] = "unavailable (it reads the file when it starts)"
            elif isinstance(result, ControlError | PeerReplyInvalid):
                processes[name] = f"error: {result}"
            elif isinstance(result, BaseException):
                raise result
            else:
                processes[name] = "ok"
                if isinstance(result, FirewallReloaded):
                    lifted = list(result.liftedBans)
        return processes, lifted

    async def reload(self, actor: str) -> ReloadResult:
        """Raises ControlError (400) when the file is invalid: nothing changed."""
        async with self._lock:
            return await self._reload(actor)

    async def _reload(self, actor: str) -> ReloadResult:
        sup = self.sup
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            self.failures += 1
            message = f"configuration not reloaded, nothing changed: {exc}"
            log.error("%s", escape(message, 2000))
            sup.audit.record("reload", actor=actor, target=self.config_path,
                             outcome=f"refused: {exc}")  # fmt: skip
            raise ControlError(message, 400) from None
        steps = plan(sup.config, new)
        processes: dict[str, str] = {}
        lifted: list[str] = []
        if steps.apply:
            order = ReloadOrder(config=without_secrets(new), keys=steps.apply)
            processes, lifted = await self._send(order)
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
        return ReloadResult(
            status="success" if not failed else "partial",
            message=message,
            applied=steps.apply,
            restartRequired=steps.restart,
            processes=processes,
            liftedBans=lifted,
        )

    def _apply_here(self, order: ReloadOrder) -> None:
        sup = self.sup
        applied = apply_in_place(sup.config, order)
        if "logging.level" in applied:
            set_level(sup.config.logging.level)
        if "security.esl_log_level" in applied:
            sup.log_level = sup.config.security.esl_log_level
