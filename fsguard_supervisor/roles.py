"""Entry point of the long-running roles: `python -m fsguard_supervisor.roles ROLE --config P`.

The supervisor starts its children through this module rather than the full `fsguard`
command line, so a worker does not load the operator verbs' HTTP client (http.client, ssl,
email: several MB per process, which matters when N workers hold 200,000 sources each).
`fsguard run|supervisor|firewall|api|worker` in cli.py call the same functions.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from fsguard_supervisor.takeover import arm_parent_death_signal
from shared.config import Config, ConfigError, find_config_path, load_config
from shared.logs import setup_logging

ROLES = ("run", "supervisor", "worker", "firewall", "api", "fleet")
EXIT_USAGE = 2


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
