"""nftables text for fsguard's table, and parsers for what `nft` prints back.

Pure functions: no process runs here (nft_backend.py runs them). Every element is
rendered from an `ipaddress` object with `str()`, never from caller text: nft resolves
anything that is not an address literal as a host name, so raw text could make it do
DNS lookups or worse. Table, set and chain names are checked against NAME_RE.

The ruleset (see docs/nftables.md for the priority choice):

    table inet <table> {
        set <name>    { type ipv4_addr; flags timeout; size 1000000; }
        set <name>-v6 { type ipv6_addr; flags timeout; size 1000000; }
        chain input {
            type filter hook input priority filter - 10; policy accept;
            ip saddr @<name> counter drop
            ip6 saddr [& <ban prefix mask>] @<name>-v6 counter drop
        }
    }

IPv6 prefix bans (`ipv6_ban_prefix` < 128) are the prefix's network address in a plain
hash set, looked up with the source address masked to the prefix — not an `interval`
set: nft 1.0.x fetches every element of a table's interval sets into its cache before
each `add element`, which made one single-element transaction take 8.6 s with 100,000
prefixes in the set (0.02 s with the masked hash lookup; docs/nftables.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .backend import Element

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,27}$")  # nft: no leading digit or -
CHAIN = "input"
PRIORITY = -10  # `filter - 10`: before iptables-nft, ufw and firewalld filter chains
SET_SIZE = 1_000_000  # as the ipset backend's maxelem
# "/dev/stdin:12:1-9: Error: ..." (nft -f -); a file name when nft reads a file.
_ERROR_RE = re.compile(r"^(?:[^:\n]*):(\d+):\d+(?:-\d+)?: Error: (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class SetSpec:
    """What fsguard wants (or found) for one set: nft type and sorted flags."""

    name: str
    type: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    """The wanted ruleset of fsguard's table."""

    table: str
    v4: SetSpec
    v6: SetSpec
    v6_mask: str | None = None  # "ffff:ffff:ffff:ffff::" for /64 bans; None for /128
    priority: int = PRIORITY

    def v6_match(self) -> str:
        mask = f" & {self.v6_mask}" if self.v6_mask else ""
        return f"ip6 saddr{mask} @{self.v6.name}"

    def render(self) -> list[str]:
        """`nft -f` lines that create the whole table (no elements)."""
        sets = []
        for spec in (self.v4, self.v6):
            flags = ",".join(spec.flags)
            sets.append(
                f"  set {spec.name} {{ type {spec.type}; flags {flags}; size {SET_SIZE}; }}"
            )
        return [
            f"table inet {self.table} {{",
            *sets,
            f"  chain {CHAIN} {{",
            f"    type filter hook input priority {self.priority}; policy accept;",
            f"    ip saddr @{self.v4.name} counter drop",
            f"    {self.v6_match()} counter drop",
            "  }",
            "}",
        ]


def table_spec(table: str, set_name: str, ipv6_prefix: int) -> TableSpec:
    """The ruleset for these settings; ValueError for an unusable name."""
    for what, name in (("nftables table", table), ("set", set_name)):
        if not NAME_RE.match(name):
            raise ValueError(
                f"invalid {what} name {name!r} (a letter or _, then up to 27 of A-Za-z0-9_.-)"
            )
    if not 1 <= ipv6_prefix <= 128:
        raise ValueError(f"ipv6_prefix must be 1..128, got {ipv6_prefix}")
    mask = None
    if ipv6_prefix < 128:
        mask = str(ipaddress.IPv6Network(f"::/{ipv6_prefix}").netmask)
    return TableSpec(
        table,
        SetSpec(set_name, "ipv4_addr", ("timeout",)),
        SetSpec(set_name + "-v6", "ipv6_addr", ("timeout",)),
        mask,
    )


# --- element batches -----------------------------------------------------------------


@dataclass
class Batch:
    """An `nft -f` transaction and, per input line, the elements that line concerns.

    A header line (`add element ... {`) concerns every element of its block, so an
    error reported there (a missing set) fails the whole block, and nothing else.
    """

    lines: list[str] = field(default_factory=list)
    owners: list[tuple[int, ...]] = field(default_factory=list)  # per line: element indices

    def block(self, verb: str, table: str, set_name: str, items: Sequence[tuple[int, str]]) -> None:
        """Append `<verb> element inet table set { ... }`, one element per line."""
        if not items:
            return
        indices = tuple(i for i, _ in items)
        self.lines.append(f"{verb} element inet {table} {set_name} {{")
        self.owners.append(indices)
        for pos, (index, text) in enumerate(items):
            comma = "," if pos < len(items) - 1 else ""
            self.lines.append(text + comma)
            self.owners.append((index,))
        self.lines.append("}")
        self.owners.append(indices)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def owners_of(self, line: int) -> tuple[int, ...]:
        """Element indices a 1-based line number concerns (() when out of range)."""
        if 1 <= line <= len(self.owners):
            return self.owners[line - 1]
        return ()


def render_element(elem: Element, timeout: int | None) -> str:
    """One element, plus `timeout Ns` unless permanent. A prefix is written as its network
    address (the set is looked up with the masked source address)."""
    if isinstance(elem, ipaddress.IPv6Network):
        text = str(elem.network_address)
    elif isinstance(elem, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        text = str(elem)
    else:
        raise TypeError(f"not an ipaddress element: {type(elem).__name__}")
    if timeout:
        return f"{text} timeout {int(timeout)}s"
    return text


def parse_errors(stderr: str) -> list[tuple[int, str]]:
    """(1-based input line, message) for every located error nft printed."""
    return [(int(m.group(1)), m.group(2).strip()) for m in _ERROR_RE.finditer(stderr)]


# --- reading `nft -j` output ---------------------------------------------------------


def _value_text(val: Any) -> str | None:
    if isinstance(val, str):
        return val
    if isinstance(val, dict):
        prefix = val.get("prefix")
        if isinstance(prefix, dict):
            return f"{prefix.get('addr')}/{prefix.get('len')}"
        rng = val.get("range")
        if isinstance(rng, list) and len(rng) == 2:
            return f"{rng[0]}-{rng[1]}"  # not an fsguard element: reconcile reports it
    return None


class _Body(msgspec.Struct):
    val: str | dict[str, Any]
    timeout: int | None = None
    expires: int | None = None


class _Wrapped(msgspec.Struct):
    elem: _Body


class _Set(msgspec.Struct):
    name: str = ""
    type: str | list[str] = ""
    flags: str | list[str] = msgspec.field(default_factory=list)
    elem: list[str | _Wrapped] = msgspec.field(default_factory=list)


class _Item(msgspec.Struct):
    set: _Set | None = None
    chain: dict[str, Any] | None = None
    rule: dict[str, Any] | None = None


class _Listing(msgspec.Struct):
    nftables: list[_Item] = msgspec.field(default_factory=list)


_LISTING = msgspec.json.Decoder(_Listing)  # typed: twice as fast as json.loads on 100k


def _elements(nft_set: _Set) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for entry in nft_set.elem:
        if isinstance(entry, str):
            out.append((entry, 0))
            continue
        body = entry.elem
        val = _value_text(body.val)
        if val is None:
            continue
        remaining = 0
        if body.timeout is not None or body.expires is not None:
            remaining = max(1, body.expires if body.expires is not None else 1)
        out.append((val, remaining))
    return out


def parse_set_elements(text: str | bytes) -> list[tuple[str, int]]:
    """(element text, remaining seconds; 0 = permanent) from `nft -j list set`."""
    out: list[tuple[str, int]] = []
    for item in _LISTING.decode(text).nftables:
        if item.set is not None:
            out.extend(_elements(item.set))
    return out


@dataclass
class TableState:
    """What `nft -j list table` shows of fsguard's table (elements empty with -t)."""

    sets: dict[str, SetSpec] = field(default_factory=dict)
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (chain, shape)
    elements: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # set -> elements
    counters: list[dict[str, Any]] = field(default_factory=list)  # of the rules, in order

    def consistent(self) -> bool:
        """No element listed twice (see nft_exec.NftRunner.read_table)."""
        return all(len(dict(els)) == len(els) for els in self.elements.values())


def _rule_shape(expr: list[Any]) -> tuple[str, ...]:
    """A rule reduced to what matters: `ip saddr @set counter drop` -> (ip, saddr, @set,
    counter, drop); counter values are ignored."""
    shape: list[str] = []
    for stmt in expr:
        if not isinstance(stmt, dict) or len(stmt) != 1:
            shape.append("?")
            continue
        ((key, body),) = stmt.items()
        if key == "match" and isinstance(body, dict):
            left = body.get("left", {})
            mask: list[str] = []
            if isinstance(left, dict) and isinstance(left.get("&"), list) and len(left["&"]) == 2:
                left, mask = left["&"][0], ["&", str(left["&"][1])]
            payload = left.get("payload", {}) if isinstance(left, dict) else {}
            shape += [
                str(payload.get("protocol")), str(payload.get("field")), *mask,
                str(body.get("op")), str(body.get("right")),
            ]  # fmt: skip
        else:
            shape.append(key)
    return tuple(shape)


def wanted_rules(spec: TableSpec) -> list[tuple[str, tuple[str, ...]]]:
    mask = ("&", spec.v6_mask) if spec.v6_mask else ()
    return [
        (CHAIN, ("ip", "saddr", "==", f"@{spec.v4.name}", "counter", "drop")),
        (CHAIN, ("ip6", "saddr", *mask, "==", f"@{spec.v6.name}", "counter", "drop")),
    ]


def parse_table(text: str | bytes) -> TableState:
    """The structure and the elements of `nft -j list table` (one typed decode)."""
    state = TableState()
    for item in _LISTING.decode(text).nftables:
        if item.set is not None:
            s = item.set
            flags = [s.flags] if isinstance(s.flags, str) else s.flags
            stype = s.type if isinstance(s.type, str) else " . ".join(s.type)
            state.sets[s.name] = SetSpec(s.name, stype, tuple(sorted(flags)))
            state.elements[s.name] = _elements(s)
        elif item.chain is not None:
            state.chains[str(item.chain.get("name"))] = item.chain
        elif item.rule is not None:
            expr = item.rule.get("expr", [])
            state.rules.append(
                (str(item.rule.get("chain")), _rule_shape(expr if isinstance(expr, list) else []))
            )
            state.counters += [
                stmt["counter"] for stmt in (expr if isinstance(expr, list) else [])
                if isinstance(stmt, dict) and isinstance(stmt.get("counter"), dict)
            ]  # fmt: skip
    return state


def differences(spec: TableSpec, state: TableState) -> list[str]:
    """Why the existing table is not the wanted one ([] when it is)."""
    diffs: list[str] = []
    for want in (spec.v4, spec.v6):
        have = state.sets.get(want.name)
        if have is None:
            diffs.append(f"set {want.name} missing")
        elif (have.type, have.flags) != (want.type, tuple(sorted(want.flags))):
            diffs.append(
                f"set {want.name} is {have.type} flags {','.join(have.flags) or '-'}, "
                f"wanted {want.type} flags {','.join(sorted(want.flags))}"
            )
    chain = state.chains.get(CHAIN)
    wanted_chain = {"type": "filter", "hook": "input", "prio": spec.priority, "policy": "accept"}
    if chain is None:
        diffs.append(f"chain {CHAIN} missing")
    else:
        found = {key: chain.get(key) for key in wanted_chain}
        if found != wanted_chain:
            diffs.append(f"chain {CHAIN} is {found}, wanted {wanted_chain}")
    if state.rules != wanted_rules(spec):
        diffs.append(f"rules are {state.rules}, wanted {wanted_rules(spec)}")
    extra = sorted(set(state.sets) - {spec.v4.name, spec.v6.name})
    extra_chains = sorted(set(state.chains) - {CHAIN})
    if extra or extra_chains:
        diffs.append(f"foreign objects in the table: sets {extra}, chains {extra_chains}")
    return diffs


def rule_prefix(state: TableState, set_name: str) -> int:
    """The IPv6 prefix length the existing rule matches `set_name` with (mask bits; 128
    without a mask or without a rule)."""
    for _, shape in state.rules:
        if f"@{set_name}" in shape and "&" in shape:
            mask = ipaddress.IPv6Address(shape[shape.index("&") + 1])
            return bin(int(mask)).count("1")
    return 128


def changed_sets(spec: TableSpec, state: TableState) -> list[str]:
    """Sets whose definition or matching rule differs from the wanted ones."""
    wanted = dict(zip((spec.v4.name, spec.v6.name), wanted_rules(spec), strict=True))
    return [
        s.name
        for s in (spec.v4, spec.v6)
        if s.name in state.sets and (state.sets[s.name] != s or wanted[s.name] not in state.rules)
    ]
