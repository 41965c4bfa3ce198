"""The offline and tooling verbs: `fsguard replay`, `fsguard capture`, `fsguard demo`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fsguard_cli.cli import DEMO_LENGTH, _ip_arg, _load
from fsguard_cli.cli_util import UsageError, flag_duration
from shared.config import Config, find_config_path, load_config


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


def register(verb: Callable[[str, str], argparse.ArgumentParser]) -> None:
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
