"""`fsguard reload`: POST /security/reload and print what changed.

Exit codes: 0 reloaded (keys needing a restart are listed, not an error); 1 a process did
not apply it; 2 the config file is invalid (nothing changed; the error names the key and
value); 3 the REST API is unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec

from fsguard_cli.ops_client import ApiError, OpsClient, resolve_endpoint
from shared.ops.supervisor import ReloadResult

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
MIN_TIMEOUT = 20.0  # the supervisor asks every process in turn

HELP = (
    "re-read and validate the config file and apply what can change at run time (rule "
    "thresholds and windows, lists, trusted networks, log level, chanDaemon) to every "
    "process, keeping counters, windows and bans; lists changed keys that need a restart. "
    "Same as SIGHUP to the supervisor or `systemctl reload fsguard-supervisor`"
)
RELOAD_CODES = ("For reload: 1 also when a process did not apply it, 2 also when the "
                "config file is invalid (nothing changed).")


def cmd_reload(args: argparse.Namespace) -> int:
    endpoint = resolve_endpoint(args.api, args.token, args.config)
    client = OpsClient.from_endpoint(endpoint, timeout=max(args.timeout, MIN_TIMEOUT))
    try:
        reply: Any = client.request("POST", "/security/reload")
    except ApiError as exc:
        if exc.status == 400:
            print(f"fsguard reload: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        raise
    try:
        result = msgspec.convert(reply, ReloadResult)  # the supervisor's `reload` reply
    except msgspec.ValidationError as exc:
        raise ApiError(200, f"unexpected reload reply: {exc}") from None
    if args.json:
        json.dump(reply, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(result.message)
        for name, outcome in sorted(result.processes.items()):
            if outcome != "ok":
                print(f"  {name}: {outcome}")
    failed = [n for n, o in result.processes.items() if o != "ok"]
    return EXIT_FAILURE if failed else EXIT_OK


def register(sub: Any) -> None:
    from fsguard_cli.cli import EXIT_CODES  # loaded: cli.build_parser calls us

    p = sub.add_parser("reload", help=HELP, description=HELP,
                       epilog=f"{EXIT_CODES} {RELOAD_CODES}")  # fmt: skip
    p.add_argument("--config", metavar="PATH", help="config file (for the API defaults)")
    p.add_argument("--api", metavar="URL",
                   help="REST API base URL (default: the config's server.host/port)")
    p.add_argument("--token", help="API bearer token (default: the config's server.api_token)")
    p.add_argument("--timeout", type=float, default=MIN_TIMEOUT, metavar="S",
                   help=f"HTTP timeout in seconds (default and minimum {MIN_TIMEOUT:.0f})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_reload)
