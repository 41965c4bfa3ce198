"""The `fsguard` command line: one entry point for every role and verb.

Running: run, supervisor, firewall, api, worker, check-config.
Operating (through the REST API): status, bans, ban, unban, whitelist, top.
Offline and tooling: replay, capture, demo.

Exit codes: 0 success; 1 runtime failure; 2 usage or configuration error;
3 the REST API is unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fsguard_supervisor.ops_client import ApiError, ApiUnreachable
from shared.config import Config, ConfigError, effective_config_json, find_config_path, load_config
from shared.logs import setup_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_API_UNREACHABLE = 3


def _load(args: argparse.Namespace) -> tuple[Config, str]:
    path = find_config_path(args.config)
    return load_config(path), path


def _setup_logs(config: Config, role: str) -> None:
    setup_logging(role, config.logging.format, config.logging.level)


def cmd_run(args: argparse.Namespace) -> int:
    config, path = _load(args)
    _setup_logs(config, "supervisor")
    from fsguard_supervisor.process import main

    return main(config, path, manage_all=True)


def cmd_supervisor(args: argparse.Namespace) -> int:
    config, path = _load(args)
    _setup_logs(config, "supervisor")
    from fsguard_supervisor.process import main

    return main(config, path, manage_all=False)


def cmd_worker(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    _setup_logs(config, f"worker-{args.index}")
    from fsguard_workers.process import main

    return main(config, args.index)


def cmd_firewall(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    _setup_logs(config, "firewall")
    from fsguard_firewall.process import main

    return main(config)


def cmd_api(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    _setup_logs(config, "api")
    from fsguard_api.process import main

    return main(config)


def cmd_check_config(args: argparse.Namespace) -> int:
    path = find_config_path(args.path or args.config)
    config = load_config(path)
    print(f"# {path}: OK", file=sys.stderr)
    print(effective_config_json(config))
    return EXIT_OK


EXIT_CODES = ("Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error, "
              "3 REST API unreachable.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsguard",
        description="Security daemon for FreeSWITCH: reads the Event Socket, bans attackers "
        "in the kernel (ipset + iptables DROP). New here? Run `fsguard demo`.",
        epilog=EXIT_CODES,
    )
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
    return code


if __name__ == "__main__":
    sys.exit(main())
