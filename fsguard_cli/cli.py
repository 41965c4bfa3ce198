"""The `fsguard` command line: one entry point for every role and verb.

Running: run, supervisor, firewall, api, worker, check-config.
Operating (through the REST API): status, bans, ban, unban, whitelist, top.
Offline and tooling: replay, capture, demo.
Verbs with their own module register their parsers from here: whitelist_cli.py,
untrusted_cli.py, offline_cli.py, state_cli.py (reconcile, bans I/O), teardown_cli.py,
reload_cli.py.

Exit codes: 0 success; 1 runtime failure; 2 usage or configuration error;
3 the REST API is unreachable; 141 stdout closed early (`| head`), as SIGPIPE would.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from fsguard_cli.cli_util import (
    EXIT_BROKEN_PIPE,
    UsageError,
    finish_parsers,
    flag_duration,
    quiet_broken_pipe,
    version,
)
from fsguard_cli.ops_client import (
    DEFAULT_API,
    ApiError,
    ApiUnreachable,
    OpsClient,
    resolve_endpoint,
    rule_of,
)
from fsguard_cli.output import Style, table
from fsguard_cli.status_firewall import firewall_line, firewall_summary
from shared.config import (
    Config,
    ConfigError,
    effective_config_json,
    find_config_path,
    load_config,
)

EXIT_OK = 0
DEMO_LENGTH = "about 10 seconds"  # measured: 10.3 s; README and the help text say the same
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_API_UNREACHABLE = 3


def _load(args: argparse.Namespace) -> tuple[Config, str]:
    path = find_config_path(args.config)
    return load_config(path), path


def _role(role: str) -> Callable[[argparse.Namespace], int]:
    """The `fsguard <role>` verbs: the same code path as the supervisor's children."""

    def command(args: argparse.Namespace) -> int:
        from shared.roles import run_role

        config, path = _load(args)
        return run_role(role, config, path, getattr(args, "index", None))

    return command


cmd_run = _role("run")
cmd_supervisor = _role("supervisor")
cmd_worker = _role("worker")
cmd_firewall = _role("firewall")
cmd_api = _role("api")
cmd_fleet = _role("fleet")


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.path and args.config and args.path != args.config:
        raise UsageError(f"two config files given ({args.config} and {args.path}): give one")
    path = find_config_path(args.path or args.config)
    config = load_config(path)
    print(f"# {path}: OK", file=sys.stderr)
    print(effective_config_json(config))
    return EXIT_OK


EXIT_CODES = ("Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error, "
              f"3 REST API unreachable, {EXIT_BROKEN_PIPE} output pipe closed early.")


# --- operating verbs (REST API) -------------------------------------------------------------


def _client(args: argparse.Namespace) -> OpsClient:
    endpoint = resolve_endpoint(args.api, args.token, args.config)
    return OpsClient.from_endpoint(endpoint, timeout=args.timeout)


def _ip_arg(text: str) -> str:
    value = text.strip()
    try:
        if "/" in value:
            return str(ipaddress.ip_network(value, strict=False))
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UsageError(f"not an IP address: {text!r}") from None


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    first = client.esl()
    t0 = time.monotonic()
    time.sleep(max(0.0, args.interval))
    second = client.esl()
    elapsed = max(1e-6, time.monotonic() - t0)
    rate = max(0, int(second.get("eventsQueued", 0)) - int(first.get("eventsQueued", 0))) / elapsed
    bans = client.blacklist()
    by_rule = Counter(rule_of(entry) for entry in bans.values())
    try:
        counts = client.security_status()
    except ApiError:
        counts = {}
    summary = {
        "api": client.url,
        "esl": {
            "connected": bool(second.get("connected")),
            "host": second.get("host"),
            "port": second.get("port"),
            "connectionAttempts": second.get("connectionAttempts"),
            "connectionErrors": second.get("connectionErrors"),
        },
        "eventsPerSecond": round(rate, 1),
        "eventsQueued": second.get("eventsQueued"),
        "eventsProcessed": second.get("eventsProcessed"),
        "eventsDropped": second.get("eventsDropped"),
        "workers": {
            "count": second.get("workerCount"),
            "queueLength": second.get("queueLength"),
            "queueCapacity": second.get("queueCapacity"),
        },
        "activeBans": len(bans),
        "bansByRule": dict(by_rule.most_common()),
        "whitelistCount": counts.get("whitelistCount"),
        "firewall": firewall_summary(client),
    }
    if args.json:
        _print_json(summary)
        return EXIT_OK
    st = Style.for_stream(sys.stdout)
    esl = summary["esl"]
    conn = st("connected", "green") if esl["connected"] else st("DISCONNECTED", "red", "bold")
    print(f"fsguard at {client.url}")
    print(f"  ESL        {conn} to {esl['host']}:{esl['port']} "
          f"(attempts {esl['connectionAttempts']}, errors {esl['connectionErrors']})")
    print(f"  events     {rate:,.1f}/s  (queued {second.get('eventsQueued')}, processed "
          f"{second.get('eventsProcessed')}, dropped {second.get('eventsDropped')})")
    print(f"  workers    {second.get('workerCount')}  (queue {second.get('queueLength')}/"
          f"{second.get('queueCapacity')})")
    white = summary["whitelistCount"]
    extra = f", whitelist {white}" if white is not None else ""
    print(f"  bans       {len(bans)} active{extra}")
    if summary["firewall"] is not None:
        print(firewall_line(summary["firewall"]))
    if by_rule:
        print(table(("RULE", "ACTIVE BANS"), by_rule.most_common(), right=(1,), style=st,
                    indent="    "))
    return EXIT_OK


def _expires(entry: dict[str, Any]) -> str:
    if entry.get("permanent"):
        return "permanent"
    return str(entry.get("expiresAt") or "-")


def cmd_bans(args: argparse.Namespace) -> int:
    bans = _client(args).blacklist()
    rows = []
    for ip, entry in sorted(bans.items(), key=lambda kv: str(kv[1].get("addedAt", ""))):
        rule = rule_of(entry)
        if args.rule and rule != args.rule:
            continue
        if args.origin and entry.get("origin", "local") != args.origin:
            continue
        rows.append((ip, rule, entry.get("origin", "local"), entry.get("failCount", 0),
                     entry.get("addedAt", ""), _expires(entry), entry.get("reason", "")))
    if args.json:
        keep = {row[0] for row in rows}
        _print_json({ip: {**e, "rule": rule_of(e)} for ip, e in bans.items() if ip in keep})
        return EXIT_OK
    if not rows:
        print("no active bans" + (f" for rule {args.rule}" if args.rule else ""))
        return EXIT_OK
    print(table(("ADDRESS", "RULE", "ORIGIN", "FAILS", "ADDED", "EXPIRES", "REASON"), rows,
                right=(3,), style=Style.for_stream(sys.stdout)))
    return EXIT_OK


def cmd_ban(args: argparse.Namespace) -> int:
    ip = _ip_arg(args.ip)
    duration = None
    if args.duration is not None:
        duration = flag_duration(args.duration, "--duration")
        if duration <= 0:
            raise UsageError("--duration must be greater than 0 (use --permanent)")
    reply = _client(args).ban(ip, reason=args.reason, duration=duration,
                              permanent=args.permanent)
    print(_message(reply, f"IP {ip} added to blacklist"))
    return EXIT_OK


def cmd_unban(args: argparse.Namespace) -> int:
    ip = _ip_arg(args.ip)
    reply = _client(args).unban(ip)
    print(_message(reply, f"IP {ip} removed from blacklist"))
    return EXIT_OK


def _message(reply: Any, default: str) -> str:
    if isinstance(reply, dict) and reply.get("message"):
        return str(reply["message"])
    return default


def cmd_top(args: argparse.Namespace) -> int:
    from fsguard_cli.top import main as top_main

    return top_main(_client(args), interval=args.interval, iterations=args.iterations)


VerbFactory = Callable[[str, str], argparse.ArgumentParser]


def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", metavar="URL",
                   help="REST API base URL (default: the config's server.host/port, else "
                        f"{DEFAULT_API})")
    p.add_argument("--token", help="API bearer token (default: the config's server.api_token)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="HTTP timeout in seconds (default 5)")


def add_operating_verbs(verb: VerbFactory) -> None:
    p = verb("status", "show the ESL connection, events/s (two samples of eventsQueued), "
             "drops, active bans by rule and workers")
    _api_options(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between the two samples (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = verb("bans", "list the active bans (GET /security/blacklist)")
    p.add_argument("action", nargs="?", choices=["list"], default="list")
    _api_options(p)
    p.add_argument("--rule", metavar="R", help="only bans made by rule R (e.g. failed_auth)")
    p.add_argument("--origin", choices=["local", "crowdsec"],
                   help="only the node's own bans, or those pulled from the CrowdSec LAPI")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bans)

    p = verb("ban", "ban an address now (POST /security/blacklist)")
    p.add_argument("ip", help="IPv4 or IPv6 address")
    _api_options(p)
    p.add_argument("--duration", metavar="D",
                   help="ban length, e.g. 30m, 2h, 3600 (default: security.block_duration)")
    p.add_argument("--reason", default="manual ban (fsguard ban)", metavar="TEXT",
                   help="reason stored with the ban")
    p.add_argument("--permanent", action="store_true", help="never expires")
    p.set_defaults(func=cmd_ban)

    p = verb("unban", "lift a ban (DELETE /security/blacklist/IP)")
    p.add_argument("ip", help="IPv4 or IPv6 address")
    _api_options(p)
    p.set_defaults(func=cmd_unban)

    from fsguard_cli.untrusted_cli import register as add_untrusted_verb
    from fsguard_cli.whitelist_cli import register as add_whitelist_verb

    add_whitelist_verb(verb, _api_options)
    add_untrusted_verb(verb, _api_options)

    p = verb("top", "live view refreshed every second: events/s, bans/min, top offending "
             "addresses and user agents (q or Ctrl-C quits)")
    _api_options(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="refresh period")
    p.add_argument("--iterations", type=int, default=0, metavar="N",
                   help="stop after N refreshes (default: until q or Ctrl-C)")
    p.set_defaults(func=cmd_top)

    from fsguard_cli.offline_cli import register as add_offline_verbs

    add_offline_verbs(verb)



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsguard",
        description="Security daemon for FreeSWITCH: reads the Event Socket, bans attackers "
        "in the kernel (ipset + iptables DROP). New here? Run `fsguard demo`.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES)
        p.add_argument(
            "--config", metavar="PATH",
            help="config file (default: ./config.json, then /etc/fsguard/config.json)",
        )
        return p

    verb("run", "run everything in one foreground tree: supervisor, workers, firewall, API"
         ).set_defaults(func=cmd_run)
    verb("supervisor", "run the supervisor role (ESL connection) with its workers"
         ).set_defaults(func=cmd_supervisor)
    verb("firewall", "run the firewall role (the only one needing CAP_NET_ADMIN)"
         ).set_defaults(func=cmd_firewall)
    verb("api", "run the REST API role").set_defaults(func=cmd_api)
    verb("fleet", "run the CrowdSec LAPI connector (push and/or pull bans)"
         ).set_defaults(func=cmd_fleet)
    p = verb("worker", "run one worker (started by the supervisor)")
    p.add_argument("--index", type=int, required=True, help="shard index")
    p.set_defaults(func=cmd_worker)
    p = verb("check-config", "validate a config file and print the effective config, "
             "secrets masked")
    p.add_argument("path", nargs="?", help="config file to check")
    p.set_defaults(func=cmd_check_config)
    add_operating_verbs(verb)
    __import__("fsguard_cli.state_cli").state_cli.register(sub)  # reconcile, bans I/O
    __import__("fsguard_cli.teardown_cli").teardown_cli.register(sub)
    __import__("fsguard_cli.reload_cli").reload_cli.register(sub)  # reload
    finish_parsers(parser, EXIT_CODES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"fsguard: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"fsguard {args.verb}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiUnreachable as exc:
        print(f"fsguard {args.verb}: REST API unreachable: {exc} (is fsguard running? "
              "use --api URL)", file=sys.stderr)
        return EXIT_API_UNREACHABLE
    except ApiError as exc:
        print(f"fsguard {args.verb}: API error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return quiet_broken_pipe()
    try:
        sys.stdout.flush()  # buffered output meets a closed pipe here, not at exit
    except BrokenPipeError:
        return quiet_broken_pipe()
    return code


if __name__ == "__main__":
    sys.exit(main())
