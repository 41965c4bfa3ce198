"""A whole `fsguard run` tree against the fake FreeSWITCH, for the end-to-end tests.

    cfg = lambda esl_port: fsguard_config(tmp, esl_port, set_name="fsg-x", api_port=18090)
    with running_fsguard(tmp, cfg, prefix="fsgx") as system:
        system.fake.send_events(...)
        assert wait_for(lambda: system.in_set("203.0.113.7"), 5)

With a namespace (`prefix` makes a fresh one, `ns` uses the caller's) the fake server's
listening socket is created inside it and the tree runs under `ip netns exec`; with
neither, both run on the host. On exit the tree gets SIGTERM (then SIGKILL), the fake
server stops and the tail of the tree's log goes to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack

from fsguard_cli.demo_setup import wait_until
from fsguard_cli.simulator import FakeFreeSwitch, ThreadedFakeFreeSwitch
from shared import addresses
from shared.control import ControlError, PeerReplyInvalid, PeerUnavailable, call
from shared.ops import supervisor as sup_ops
from shared.ops.base import Empty, Op, RepT, ReqT
from shared.ops.common import Ping
from shared.ops.supervisor import ChildInfo, SupervisorStats
from tests.netns_helpers import netns, run_in, socket_in

FSGUARD = str(Path(sys.executable).parent / "fsguard")
PHONE_UA = "Yealink SIP-T46S 66.86.0.15"


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll until predicate() (a bounded wait, not a timing assertion): the demo's
    `wait_until`, for a predicate of any truth value."""
    return wait_until(lambda: bool(predicate()), timeout, interval)


def fsguard_config(
    tmp: Path,
    esl_port: int | str,
    *,
    set_name: str,
    api_port: int | str,
    workers: int = 2,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """The config the system tests share; each keyword merges into one section (None drops)."""
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": api_port},
        "security": {
            "esl_host": "127.0.0.1",
            "esl_port": esl_port,
            "esl_password": "ClueCon",
            "max_failed_attempts": 5,
            "failed_attempts_window": "10m",
            "trusted_networks": ["127.0.0.0/8", "198.51.100.0/24"],
            "ipset_name": set_name,
            "reconnect_backoff": "100ms",
            "auto_whitelist_on_success": False,
        },
        "paths": {"runtime_dir": str(tmp / "run"), "state_dir": str(tmp / "state")},
        "workers": {"count": workers},
        "logging": {"format": "human", "level": "info"},
    }
    for key, values in sections.items():
        merged = {**cfg.get(key, {}), **values}
        cfg[key] = {k: v for k, v in merged.items() if v is not None}
    return cfg


@dataclass
class RunningSystem:
    """The running tree: its namespace (None on the host), fake server, process and files."""

    ns: str | None
    fake: ThreadedFakeFreeSwitch
    proc: subprocess.Popen[bytes]
    tmp: Path
    config: dict[str, Any]
    config_path: Path
    log_path: Path

    @property
    def runtime_dir(self) -> str:
        return str(self.config["paths"]["runtime_dir"])

    @property
    def state_dir(self) -> Path:
        return Path(self.config["paths"]["state_dir"])

    @property
    def set_name(self) -> str:
        return str(self.config["security"]["ipset_name"])

    @property
    def api_port(self) -> int:
        return int(self.config["server"]["port"])

    def in_set(self, ip: str) -> bool:
        """Whether `ip` is in the kernel set (the -v6 one for an IPv6 address)."""
        assert self.ns is not None, "no namespace: nothing in the kernel"
        name = self.set_name + ("-v6" if ":" in ip else "")
        return run_in(self.ns, ["ipset", "test", name, ip], check=False).returncode == 0

    def firewall(self, op: Op[ReqT, RepT], req: ReqT) -> RepT:
        """One typed op on the firewall's control socket that must succeed."""
        return call(addresses.firewall_control(self.runtime_dir), op, req, timeout=2)

    def children(self) -> list[ChildInfo]:
        """The supervisor's view of its children."""
        return call(addresses.supervisor_control(self.runtime_dir), sup_ops.PROCESSES, Empty())

    def supervisor_stats(self) -> SupervisorStats:
        """The supervisor's counters (its `stats` op)."""
        return call(addresses.supervisor_control(self.runtime_dir), sup_ops.STATS, Empty())


def answers(endpoint: str, ping: Op[Empty, Ping], timeout: float = 0.5) -> bool:
    """Whether the process on `endpoint` answers its role's typed `ping`."""
    try:
        call(endpoint, ping, Empty(), timeout=timeout)
    except (PeerUnavailable, ControlError, PeerReplyInvalid):
        return False
    return True


S = TypeVar("S", bound=RunningSystem)


def _fake_server(ns: str | None) -> ThreadedFakeFreeSwitch:
    if ns is None:
        return ThreadedFakeFreeSwitch()
    listener = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return ThreadedFakeFreeSwitch(FakeFreeSwitch(sock=listener))


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the whole tree
        proc.wait()


class RunOptions(TypedDict, total=False):
    """How `running_fsguard` runs the tree.

    prefix: make a fresh namespace; ns: use the caller's; stop_timeout: SIGTERM grace;
    command: replaces `fsguard run` (e.g. another interpreter's `-m
    fsguard_supervisor.roles run`), `--config PATH` is appended to it.
    """

    prefix: str | None
    ns: str | None
    stop_timeout: float
    command: list[str] | None


def running_fsguard(
    tmp: Path, config: Callable[[int], dict[str, Any]], **options: Unpack[RunOptions]
) -> AbstractContextManager[RunningSystem]:
    """Fake FreeSWITCH + `fsguard run` on config(esl_port), subscribed; all stopped after."""
    return running_fsguard_as(RunningSystem, tmp, config, **options)


@contextmanager
def running_fsguard_as(
    cls: type[S],
    tmp: Path,
    config: Callable[[int], dict[str, Any]],
    **options: Unpack[RunOptions],
) -> Iterator[S]:
    """`running_fsguard`, yielding a `cls` (a RunningSystem subclass with more helpers)."""
    ns = options.get("ns")
    prefix = options.get("prefix")
    command = options.get("command")
    stop_timeout = options.get("stop_timeout", 15.0)
    with ExitStack() as stack:
        if prefix is not None:
            ns = stack.enter_context(netns(prefix))
        fake = _fake_server(ns)
        fake.start()
        stack.callback(fake.stop)
        cfg = config(fake.port)
        config_path = tmp / "config.json"
        config_path.write_text(json.dumps(cfg))
        log_path = tmp / "fsguard.log"
        argv = [*(command or [FSGUARD, "run"]), "--config", str(config_path)]
        if ns is not None:
            argv = ["ip", "netns", "exec", ns, *argv]
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log_file,
                                    start_new_session=True)  # fmt: skip
        try:
            assert fake.wait_for_subscription(20), "fsguard never subscribed to events"
            yield cls(ns, fake, proc, tmp, cfg, config_path, log_path)
        finally:
            _stop(proc, stop_timeout)
            fake.stop()
            if ns is not None:
                run_in(ns, ["iptables", "-F"], check=False)
            sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
