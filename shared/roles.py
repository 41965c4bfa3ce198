"""Entry point of the long-running roles: `python -m fsguard_supervisor.roles ROLE --config P`.

The supervisor starts its children through that module (a shim over this one) rather than
the full `fsguard` command line, so a worker does not load the operator verbs' HTTP client
(http.client, ssl, email: several MB per process, which matters when N workers hold 200,000
sources each). `fsguard run|supervisor|firewall|api|worker|fleet` (fsguard_cli/cli.py) and
`python -m fsguard_api|fsguard_firewall|fsguard_fleet` call the same functions. It lives in
shared/ so that no role imports another role's package: each role's `process.main` is
imported here, lazily, only for the role being run.

Children: `arm_parent_death_signal()` runs first thing in every child: PR_SET_PDEATHSIG
makes the kernel SIGKILL the child when its parent dies (kill -9 included), and the check
of `getppid()` against FSGUARD_PARENT_PID closes the race of a parent dying before the
prctl. The supervisor's side (pidfile, leftovers) is fsguard_supervisor/takeover.py.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from collections.abc import Sequence

from shared.config import Config, ConfigError, find_config_path, load_config
from shared.logs import setup_logging

ROLES = ("run", "supervisor", "worker", "firewall", "api", "fleet")
EXIT_USAGE = 2
PARENT_ENV = "FSGUARD_PARENT_PID"
PR_SET_PDEATHSIG = 1


def arm_parent_death_signal() -> None:
    """In a child started by the supervisor: die (SIGKILL) when the supervisor dies."""
    expected = os.environ.get(PARENT_ENV, "")
    if not expected.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(expected):  # the parent died before the prctl: too late for it
        os._exit(1)


def load(config_arg: str | None) -> tuple[Config, str]:
    path = find_config_path(config_arg)
    return load_config(path), path


def run_role(role: str, config: Config, config_path: str, index: int | None = None) -> int:
    """Set up the role's logging and run its main loop; returns the exit code."""
    name = f"worker-{index}" if role == "worker" else ("supervisor" if role == "run" else role)
    if role not in ("run", "supervisor"):
        # SIGHUP means reload, coordinated by the supervisor (fsguard_supervisor/reload.py);
        # a child hit by a terminal's hangup keeps running instead of dying.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    setup_logging(name, config.logging.format, config.logging.level)
    if role in ("run", "supervisor"):
        from fsguard_supervisor.process import main as supervisor_main

        return supervisor_main(config, config_path, manage_all=role == "run")
    if role == "worker":
        from fsguard_workers.process import main as worker_main

        if index is None:
            raise ValueError("worker needs an index")
        return worker_main(config, index)
    if role == "firewall":
        from fsguard_firewall.process import main as firewall_main

        return firewall_main(config)
    if role == "api":
        from fsguard_api.process import main as api_main

        return api_main(config)
    if role == "fleet":
        from fsguard_fleet.process import main as fleet_main

        return fleet_main(config)
    raise ValueError(f"unknown role {role!r}")


def main(argv: Sequence[str] | None = None) -> int:
    arm_parent_death_signal()  # a child of the supervisor dies with it (kill -9 included)
    parser = argparse.ArgumentParser(prog="python -m fsguard_supervisor.roles")
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--config", metavar="PATH")
    parser.add_argument("--index", type=int)
    args = parser.parse_args(argv)
    try:
        config, path = load(args.config)
    except ConfigError as exc:
        print(f"fsguard: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.role == "worker" and args.index is None:
        parser.error("worker needs --index")
    try:
        return run_role(args.role, config, path, args.index)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
