"""`fsguard untrusted list|add|remove|test`: run-time untrusted patterns via the REST API.

A pattern that covers every address or a trusted network is refused by the firewall; a
very broad address prefix (shorter than /8, or /32 for IPv6) needs `--force`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

EXIT_OK = 0


def register(
    verb: Callable[[str, str], argparse.ArgumentParser],
    api_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = verb("untrusted", "list, add, remove or test untrusted patterns (domains, "
             "*.suffix, addresses, CIDRs)")  # fmt: skip
    p.add_argument("action", choices=["list", "add", "remove", "test"])
    p.add_argument("pattern", nargs="?", default="", help="pattern (or domain, for test)")
    p.add_argument("--force", action="store_true",
                   help="accept a very broad prefix (shorter than /8, or /32 for IPv6)")
    p.add_argument("--json", action="store_true", help="print JSON")
    api_options(p)
    p.set_defaults(func=cmd_untrusted)


def cmd_untrusted(args: argparse.Namespace) -> int:
    from fsguard_cli.cli import _client, _message, _print_json

    client = _client(args)
    if args.action != "list" and not args.pattern:
        raise SystemExit(f"fsguard untrusted {args.action}: a pattern is required")
    reply: Any
    if args.action == "add":
        body = {"pattern": args.pattern, "force": bool(args.force)}
        reply = client.request("POST", "/security/untrusted-networks", body)
        print(_message(reply, f"Pattern '{args.pattern}' added to untrusted networks"))
        return EXIT_OK
    if args.action == "remove":
        path = f"/security/untrusted-networks/{quote(args.pattern, safe='')}"
        reply = client.request("DELETE", path)
        print(_message(reply, f"Pattern '{args.pattern}' removed from untrusted networks"))
        return EXIT_OK
    if args.action == "test":
        path = f"/security/untrusted-networks/test/{quote(args.pattern, safe='')}"
        reply = client.request("GET", path)
    else:
        reply = client.request("GET", "/security/untrusted-networks")
    if args.json or args.action == "test":
        _print_json(reply)
    else:
        for pattern in reply if isinstance(reply, list) else []:
            print(pattern)
    return EXIT_OK
