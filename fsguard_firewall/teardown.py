"""Remove one backend's kernel objects — only those fsguard created (`fsguard teardown`).

- ipset: the `-m set --match-set <ipset_name>[-v6] src -j DROP` rules in
  `security.iptables_chain` (iptables and ip6tables), then the two sets.
- nftables: the table `inet <nftables_table>` (and a leftover probe table).

Nothing else is touched: other rules in the chain, other sets and tables stay. Used
after switching `security.firewall_backend` (docs/nftables.md, "Switching backend").
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import msgspec

from shared.config import Config

from .backend import FirewallError
from .nft_backend import NftBackend

BACKENDS = ("ipset", "nftables")
_MAX_RULES = 16  # duplicate DROP rules removed per family, at most


class TeardownResult(msgspec.Struct, kw_only=True):
    backend: str
    removed: list[str] = msgspec.field(default_factory=list)  # what existed and is gone
    absent: list[str] = msgspec.field(default_factory=list)  # what was not there
    errors: list[str] = msgspec.field(default_factory=list)


def _run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(argv), 124, "", f"timed out after {timeout}s")


def teardown_ipset(
    set_name: str, chain: str, *, command_prefix: Sequence[str] = (), timeout: float = 10.0
) -> TeardownResult:
    result = TeardownResult(backend="ipset")
    pre = list(command_prefix)
    for binary, name in (("iptables", set_name), ("ip6tables", set_name + "-v6")):
        rule = [chain, "-m", "set", "--match-set", name, "src", "-j", "DROP"]
        label = f"{binary} -A {' '.join(rule)}"
        deleted = 0
        for _ in range(_MAX_RULES):
            if _run([*pre, binary, "-w", "5", "-C", *rule], timeout).returncode != 0:
                break
            proc = _run([*pre, binary, "-w", "5", "-D", *rule], timeout)
            if proc.returncode != 0:
                result.errors.append(f"{label}: {proc.stderr.strip()}")
                break
            deleted += 1
        (result.removed if deleted else result.absent).append(label)
    for name in (set_name, set_name + "-v6"):
        proc = _run([*pre, "ipset", "destroy", name], timeout)
        if proc.returncode == 0:
            result.removed.append(f"ipset {name}")
        elif "does not exist" in proc.stderr:
            result.absent.append(f"ipset {name}")
        else:
            result.errors.append(f"ipset destroy {name}: {proc.stderr.strip()}")
    return result


def teardown_nftables(
    table: str, set_name: str, *, command_prefix: Sequence[str] = ()
) -> TeardownResult:

    result = TeardownResult(backend="nftables")
    backend = NftBackend(table, set_name, default_timeout=0, command_prefix=command_prefix)
    try:
        if backend.teardown():
            result.removed.append(f"nft table inet {table}")
        else:
            result.absent.append(f"nft table inet {table}")
    except FirewallError as exc:
        result.errors.append(str(exc))
    return result


def teardown(
    config: Config, backend: str, *, command_prefix: Sequence[str] = ()
) -> TeardownResult:
    """Remove `backend`'s objects as named by `config` (ValueError for another name)."""
    sec = config.security
    if backend == "ipset":
        return teardown_ipset(sec.ipset_name, sec.iptables_chain, command_prefix=command_prefix)
    if backend == "nftables":
        return teardown_nftables(
            sec.nftables_table, sec.ipset_name, command_prefix=command_prefix
        )
    raise ValueError(f"unknown firewall backend {backend!r}: expected one of {BACKENDS}")
