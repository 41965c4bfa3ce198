"""`fsguard whitelist list|add|remove`: the whitelist through the REST API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from fsguard_cli.cli import EXIT_CODES, EXIT_OK, _client, _ip_arg, _message, _print_json
from fsguard_cli.cli_util import UsageError, flag_duration
from fsguard_cli.output import Style, table


def cmd_whitelist(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "add":
        ip = _ip_arg(args.ip)
        if args.ttl is not None and flag_duration(args.ttl, "--ttl") <= 0:
            raise UsageError("--ttl must be greater than 0 (use --permanent)")
        reply = client.whitelist_add(ip, user=args.user, domain=args.domain,
                                     permanent=args.permanent, ttl=args.ttl,
                                     lift_bans=args.lift_bans)  # fmt: skip
        print(_message(reply, f"IP {ip} added to whitelist"))
        for key in reply.get("bansInside", []) if isinstance(reply, dict) else []:
            print(f"  still banned inside: {key} (--lift-bans lifts it)")
        return EXIT_OK
    if args.action == "remove":
        ip = _ip_arg(args.ip)
        reply = client.whitelist_remove(ip)
        print(_message(reply, f"IP {ip} removed from whitelist"))
        return EXIT_OK
    entries = client.whitelist()
    if args.json:
        _print_json(entries)
        return EXIT_OK
    if not entries:
        print("whitelist is empty (trusted networks are not listed)")
        return EXIT_OK
    rows = [(ip, e.get("userId", ""), e.get("domain", ""), e.get("addedAt", ""),
             "permanent" if e.get("permanent") else e.get("expiresAt", ""))
            for ip, e in sorted(entries.items())]
    print(table(("ADDRESS", "USER", "DOMAIN", "ADDED", "EXPIRES"), rows,
                style=Style.for_stream(sys.stdout)))
    return EXIT_OK


def register(
    verb: Callable[[str, str], argparse.ArgumentParser],
    api_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = verb("whitelist", "list, add or remove whitelisted addresses")
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    w = wsub.add_parser("list", help="list the whitelist", description="list the whitelist "
                        "(GET /security/whitelist)", epilog=EXIT_CODES)
    w.add_argument("--json", action="store_true", help="print JSON")
    ws = [w]
    w = wsub.add_parser("add", help="whitelist an address or network",
                        description="whitelist an address or a network such as "
                        "198.51.100.0/24 (POST /security/whitelist): nothing inside is banned "
                        "again; a banned address is unbanned; the bans inside a network are "
                        "listed, and lifted with --lift-bans", epilog=EXIT_CODES)
    w.add_argument("ip", help="IPv4 or IPv6 address, or network (CIDR)")
    w.add_argument("--ttl", metavar="D", help="lifetime, e.g. 8h, 7d (default: "
                   "security.whitelist_ttl)")
    w.add_argument("--lift-bans", action="store_true",
                   help="for a network: lift the active bans inside it")
    w.add_argument("--user", default="", help="SIP user the address belongs to")
    w.add_argument("--domain", default="", help="SIP domain (default: freeswitch.default_domain)")
    w.add_argument("--permanent", action="store_true", help="never expires")
    ws.append(w)
    w = wsub.add_parser("remove", help="remove a whitelisted address or network",
                        description="remove a whitelisted address or network "
                        "(DELETE /security/whitelist/IP)", epilog=EXIT_CODES)
    w.add_argument("ip", help="IPv4 or IPv6 address, or network (CIDR)")
    ws.append(w)
    for w in ws:
        w.add_argument("--config", metavar="PATH", help="config file (for the API defaults)")
        api_options(w)
    p.set_defaults(func=cmd_whitelist)
