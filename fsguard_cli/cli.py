"""The `fsguard` command line: one entry point for every role and verb.

Running: run, supervisor, firewall, api, worker, check-config.
Operating (through the REST API): status, bans, ban, unban, whitelist, top.
Offline and tooling: replay, capture, demo.

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
        rows.append((ip, rule, entry.get("failCount", 0), entry.get("addedAt", ""),
                     _expires(entry), entry.get("reason", "")))
    if args.json:
        keep = {row[0] for row in rows}
        _print_json({ip: {**e, "rule": rule_of(e)} for ip, e in bans.items() if ip in keep})
        return EXIT_OK
    if not rows:
        print("no active bans" + (f" for rule {args.rule}" if args.rule else ""))
        return EXIT_OK
    print(table(("ADDRESS", "RULE", "FAILS", "ADDED", "EXPIRES", "REASON"), rows,
                right=(2,), style=Style.for_stream(sys.stdout)))
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


def cmd_top(args: argparse.Namespace) -> int:
    from fsguard_cli.top import main as top_main

    return top_main(_client(args), interval=args.interval, iterations=args.iterations)


# --- offline and tooling verbs ---------------------------------------------------------------


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number greater than 0")
    return value


def cmd_replay(args: argparse.Namespace) -> int:
    from fsguard_cli import replay

    config = load_config(find_config_path(args.config)) if args.config else Config()
    if args.rewrite_ip is not None:
        _ip_arg(args.rewrite_ip)
    rewrite = None if args.keep_ips else (args.rewrite_ip or replay.DEFAULT_REWRITE_IP)
    try:
        return replay.main(args.capture, config, speed=args.speed, rewrite_ip=rewrite,
                           phases_file=args.per_phase, as_json=args.json)
    except replay.CaptureError as exc:
        raise UsageError(str(exc)) from None


def cmd_capture(args: argparse.Namespace) -> int:
    from fsguard_cli import capture

    config, _ = _load(args)
    duration = None
    if args.duration is not None:
        duration = flag_duration(args.duration, "--duration")
    return capture.main(config, args.out, fmt=args.format, duration=duration)


def cmd_demo(args: argparse.Namespace) -> int:
    from fsguard_cli.demo import main as demo_main

    return demo_main(force_dry_run=args.dry_run)


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
        _api_options(w)
    p.set_defaults(func=cmd_whitelist)

    from fsguard_cli.untrusted_cli import register as add_untrusted_verb

    add_untrusted_verb(verb, _api_options)

    p = verb("top", "live view refreshed every second: events/s, bans/min, top offending "
             "addresses and user agents (q or Ctrl-C quits)")
    _api_options(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="refresh period")
    p.add_argument("--iterations", type=int, default=0, metavar="N",
                   help="stop after N refreshes (default: until q or Ctrl-C)")
    p.set_defaults(func=cmd_top)

    p = verb("replay", "run the detection rules offline over a raw ESL capture (plain or "
             "json) and print what would be banned, by which rule, after which event")
    p.add_argument("capture", help="capture file (as written by `fsguard capture`)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--max", dest="speed", action="store_const", const=None,
                      help="as fast as possible (default)")
    pace.add_argument("--speed", type=_speed, metavar="N", default=None,
                      help="honour the recorded Event-Date-Timestamp gaps divided by N")
    addr = p.add_mutually_exclusive_group()
    addr.add_argument("--rewrite-ip", metavar="IP",
                      help="rewrite every source address to IP (default 203.0.113.50: "
                           "captures made on loopback are trusted otherwise)")
    addr.add_argument("--keep-ips", action="store_true", help="keep the captured addresses")
    p.add_argument("--per-phase", metavar="PHASES_FILE",
                   help="give each phase of a phases file (`<unix ts> BEGIN <name>` lines) its "
                        "own address 203.0.113.<n>, n = 1, 2, ... in file order")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_replay)

    p = verb("capture", "record a FreeSWITCH Event Socket stream (every byte, from the "
             "auth/request on) to a file that `fsguard replay` reads")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write")
    p.add_argument("--format", choices=["json", "plain"], default="json",
                   help="event format to subscribe with (default json)")
    p.add_argument("--duration", metavar="D",
                   help="stop after D (e.g. 30s, 5m; default: until Ctrl-C or disconnect)")
    p.set_defaults(func=cmd_capture)

    p = verb("demo", "start the whole system against a simulated FreeSWITCH replaying a real "
             f"attack, and narrate what happens (ends by itself in {DEMO_LENGTH})")
    p.add_argument("--dry-run", action="store_true",
                   help="never touch the kernel, even as root (security.dry_run)")
    p.set_defaults(func=cmd_demo)


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
    p = verb("worker", "run one worker (started by the supervisor)")
    p.add_argument("--index", type=int, required=True, help="shard index")
    p.set_defaults(func=cmd_worker)
    p = verb("check-config", "validate a config file and print the effective config, "
             "secrets masked")
    p.add_argument("path", nargs="?", help="config file to check")
    p.set_defaults(func=cmd_check_config)
    add_operating_verbs(verb)
    __import__("fsguard_cli.state_cli").state_cli.register(sub)  # reconcile, bans I/O
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
