"""CLI verbs over the firewall's durable state: `reconcile`, `bans export`, `bans import`.

Each talks to the running firewall through its control socket (ops `reconcile`,
`bans_export`, `bans_import`) and, when no firewall answers, works directly: on the
SQLite store (export/import; the kernel follows at the next firewall start) or on the
store and the kernel sets (reconcile; needs CAP_NET_ADMIN). The store's exclusive lock
refuses direct work while a firewall owns it.

`register(subparsers)` adds them to `fsguard` (cli.build_parser); `bans` already exists
there (list, through the REST API), so `export` and `import` are added to its actions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import msgspec

from shared import addresses
from shared.config import Config, find_config_path, load_config
from shared.control import ControlError, PeerReplyInvalid, PeerUnavailable, call
from shared.ops import firewall as fw_ops
from shared.ops.base import Empty, Op, RepT, ReqT
from shared.ops.firewall_state import ImportRequest, ReconcileRequest

# The firewall's reply, or why it refused (its message and status).
Answer = tuple[RepT | None, ControlError | None]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
CONTROL_TIMEOUT = 60.0


def _config(args: argparse.Namespace) -> Config:
    return load_config(find_config_path(getattr(args, "config", None)))


def _firewall(config: Config, op: Op[ReqT, RepT], req: ReqT) -> Answer[RepT] | None:
    """The running firewall's answer (reply or refusal), or None when no firewall answers."""
    endpoint = addresses.firewall_control(config.paths.runtime_dir)
    if not os.path.exists(addresses.ipc_path(endpoint)):
        return None
    try:
        call(endpoint, fw_ops.PING, Empty(), timeout=1.0)
    except (PeerUnavailable, ControlError, PeerReplyInvalid):
        return None
    try:
        return call(endpoint, op, req, timeout=CONTROL_TIMEOUT), None
    except ControlError as exc:
        return None, exc
    except PeerUnavailable as exc:  # it answered the ping: a slow answer is a failure
        return None, ControlError(str(exc), 503)
    except PeerReplyInvalid as exc:
        return None, ControlError(str(exc), 502)


def _err(verb: str, message: str) -> None:
    print(f"fsguard {verb}: {message}", file=sys.stderr)


def print_reconcile(result: dict[str, Any], where: str) -> None:
    print(f"reconciled ({where}) in {float(result.get('seconds', 0.0)):.2f}s")
    for key, label in (
        ("stored", "active bans in the store"),
        ("kernel_before", "entries in the kernel before"),
        ("added", "re-added to the kernel"),
        ("retimed", "re-armed with the stored timeout"),
        ("removed_foreign", "kernel entries without a record removed"),
        ("kept_foreign", "kernel entries without a record kept"),
        ("adopted", "kernel entries adopted into an empty store"),
        ("dropped_rows", "stored bans dropped (trusted/whitelisted/invalid)"),
    ):
        print(f"  {label:<52} {result.get(key, 0)}")
    migrated = result.get("migrated") or []
    print(f"  {'sets migrated':<52} {', '.join(migrated) if migrated else '-'}")
    for err in result.get("errors") or []:
        print(f"  error: {err}")


def cmd_reconcile(args: argparse.Namespace) -> int:
    config = _config(args)
    answer = _firewall(config, fw_ops.RECONCILE, ReconcileRequest(from_empty=args.from_empty))
    if answer is not None:
        done, refused = answer
        if done is None:
            _err("reconcile", str(refused))
            return EXIT_FAILURE
        result: dict[str, Any] = msgspec.to_builtins(done)
        where = "by the running firewall"
    else:
        from fsguard_firewall.durable import Durable
        from fsguard_firewall.kernel import FirewallError
        from fsguard_firewall.process import Firewall, make_kernel
        from fsguard_firewall.store import StoreError

        try:
            durable = Durable.open(config)
        except StoreError as exc:
            _err("reconcile", str(exc))
            return EXIT_FAILURE
        try:
            durable.reporter = None  # a one-shot command sends no reports
            kernel = make_kernel(config)
            fw = Firewall(config, kernel, store=durable.bans)
            durable.attach(fw)
            kernel.ensure()
            result = msgspec.to_builtins(durable.reconcile(from_empty=args.from_empty))
        except FirewallError as exc:
            _err("reconcile", f"firewall error: {exc}")
            return EXIT_FAILURE
        finally:
            durable.close()
        where = "directly: no firewall running"
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print_reconcile(result, where)
    return EXIT_FAILURE if result.get("errors") else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    config = _config(args)
    answer = _firewall(config, fw_ops.BANS_EXPORT, Empty())
    if answer is not None:
        exported, refused = answer
        if exported is None:
            _err("bans export", str(refused))
            return EXIT_FAILURE
        data = exported
    else:
        from fsguard_firewall.durable import open_store
        from fsguard_firewall.store import StoreError

        try:
            with open_store(config) as store:
                data = store.export_json()
        except StoreError as exc:
            _err("bans export", str(exc))
            return EXIT_FAILURE
    json.dump(data, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    if not args.file:
        _err("bans import", "a file is required (`-` reads stdin)")
        return EXIT_USAGE
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file).read()  # noqa: SIM115
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        _err("bans import", f"cannot read {args.file}: {exc}")
        return EXIT_USAGE
    config = _config(args)
    answer = _firewall(config, fw_ops.BANS_IMPORT, ImportRequest(data=data))
    if answer is not None:
        imported, refused = answer
        if imported is None:
            _err("bans import", str(refused))
            return EXIT_USAGE if refused is not None and refused.status == 400 else EXIT_FAILURE
        print(f"imported {imported.imported} entries into the running firewall")
        if imported.reconcile is not None:
            print_reconcile(msgspec.to_builtins(imported.reconcile), "after the import")
        return EXIT_OK
    from fsguard_firewall.durable import check_import, open_store
    from fsguard_firewall.process import Firewall, make_kernel
    from fsguard_firewall.store import ImportDataError, StoreError

    kernel = make_kernel(config)
    fw = Firewall(config, kernel)  # for the trusted-network check only
    try:
        with open_store(config) as store:
            check_import(kernel, fw.is_trusted, data)
            count = store.import_json(data, time.time())
    except ImportDataError as exc:
        _err("bans import", str(exc))
        return EXIT_USAGE
    except StoreError as exc:
        _err("bans import", str(exc))
        return EXIT_FAILURE
    print(f"imported {count} entries into the store (the kernel follows at the next start)")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add `reconcile`, and `export`/`import` to the existing `bans` verb."""
    help_text = (
        "compare the stored bans with the kernel sets and repair both ways (through the "
        "running firewall, or directly when none runs); prints what changed"
    )
    p = sub.add_parser("reconcile", help=help_text, description=help_text)
    p.add_argument("--config", metavar="PATH", help="config file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--from-empty",
        action="store_true",
        help="the state store is empty on purpose: remove the kernel entries it has no "
        "record of (without this flag an empty store adopts them)",
    )
    p.set_defaults(func=cmd_reconcile)

    bans: argparse.ArgumentParser | None = sub.choices.get("bans")
    if bans is None:
        bans = sub.add_parser("bans", help="export or import the durable state")
        bans.add_argument("action", choices=["export", "import"])
        bans.add_argument("--config", metavar="PATH", help="config file")
        list_func = None
    else:
        list_func = bans.get_default("func")
        for action in bans._actions:
            if action.dest == "action" and action.choices is not None:
                action.choices = [*action.choices, "export", "import"]
                action.help = "list (REST API), export (JSON to stdout) or import FILE"
    bans.add_argument("file", nargs="?", help="for import: the JSON file (`-` = stdin)")

    def dispatch(args: argparse.Namespace) -> int:
        if args.action == "export":
            return cmd_export(args)
        if args.action == "import":
            return cmd_import(args)
        if list_func is None:
            return EXIT_USAGE
        code: int = list_func(args)
        return code

    bans.set_defaults(func=dispatch)
