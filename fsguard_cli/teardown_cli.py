"""`fsguard teardown [--backend ipset|nftables]`: remove fsguard's kernel objects.

Only what fsguard created goes (fsguard_firewall/teardown.py): one backend's with
`--backend` (after switching `security.firewall_backend`), both without (uninstall).
Needs CAP_NET_ADMIN. Tearing down the backend the running firewall uses would lift
every ban until its next drift check, so that is refused unless `--force`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec

from shared.config import ConfigError, find_config_path, load_config
from shared.ops import firewall as fw_ops
from shared.ops.base import Empty

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _err(message: str) -> None:
    print(f"fsguard teardown: {message}", file=sys.stderr)


def cmd_teardown(args: argparse.Namespace) -> int:
    from fsguard_firewall.teardown import teardown

    from .state_cli import _firewall

    try:
        config = load_config(find_config_path(args.config))
    except (ConfigError, OSError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    active = config.security.firewall_backend.lower()
    backends = [args.backend] if args.backend else ["ipset", "nftables"]
    if active in backends and not args.force:
        running = _firewall(config, fw_ops.PING, Empty()) is not None
        if running:
            _err(
                f"{active} is the running firewall's backend: its bans would be lifted. "
                "Stop the firewall (or switch security.firewall_backend and restart it) "
                "first, or --force."
            )
            return EXIT_USAGE
    results = [teardown(config, backend) for backend in backends]
    if args.json:
        data = [msgspec.to_builtins(r) for r in results]
        json.dump(data[0] if args.backend else data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        for result in results:
            for item in result.removed:
                print(f"removed  {item}")
            for item in result.absent:
                print(f"absent   {item}")
            for err in result.errors:
                _err(err)
    return EXIT_FAILURE if any(r.errors for r in results) else EXIT_OK


def register(sub: Any) -> None:
    help_text = (
        "remove what fsguard created in the kernel — its sets, its rules, its nftables "
        "table — for one backend (e.g. the old one after switching "
        "security.firewall_backend) or, without --backend, both"
    )
    p = sub.add_parser("teardown", help=help_text, description=help_text)
    p.add_argument(
        "--backend",
        choices=["ipset", "nftables"],
        help="ipset: the DROP rules and the two ipsets; nftables: the table inet "
        "<security.nftables_table>",
    )
    p.add_argument("--config", metavar="PATH", help="config file")
    p.add_argument(
        "--force", action="store_true", help="even when it is the running firewall's backend"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_teardown)
