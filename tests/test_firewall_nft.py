"""NftBackend against the real kernel, each test inside its own network namespace."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest

from fsguard_firewall import nft_ruleset as nr
from fsguard_firewall.kernel import FirewallError
from fsguard_firewall.nft_backend import NftBackend
from fsguard_firewall.reconcile import kernel_timeout, parse_member
from tests.netns_helpers import (
    REAL_NFT,
    netns,
    requires_netns,
    requires_nft,
    run_in,
    udp_reaches,
    veth_pair,
)

pytestmark = [pytest.mark.netns, requires_netns, requires_nft]

TABLE = "fsgt"
SET = "fsg-test"


def make_fw(ns: str, **kw: Any) -> NftBackend:
    return NftBackend(
        TABLE, SET, default_timeout=3600, command_prefix=["ip", "netns", "exec", ns], **kw
    )


def ip(text: str) -> Any:
    return ipaddress.ip_address(text)


def table_json(ns: str) -> list[dict[str, Any]]:
    out = run_in(ns, ["nft", "-j", "-t", "list", "table", "inet", TABLE], check=True).stdout
    items: list[dict[str, Any]] = json.loads(out)["nftables"]
    return items


def want_of(fw: NftBackend, ips: list[str], expires_at: float) -> dict[str, tuple[Any, int]]:
    """What the ledger hands the backend: str(element) -> (element, remaining seconds)."""
    now = time.time()
    want: dict[str, tuple[Any, int]] = {}
    for text in ips:
        parsed = parse_member(text)
        assert parsed is not None and not isinstance(parsed, ipaddress.IPv4Network)
        elem = fw.element(parsed)
        want[str(elem)] = (elem, kernel_timeout(expires_at, now))
    return want


def test_ensure_builds_the_ruleset_once(ns: str) -> None:
    fw = make_fw(ns, ipv6_prefix=64)
    assert fw.ensure() == []
    handles = [o["rule"]["handle"] for o in table_json(ns) if "rule" in o]
    assert fw.ensure() == []  # idempotent: same rules, nothing re-created
    items = table_json(ns)
    assert [o["rule"]["handle"] for o in items if "rule" in o] == handles
    sets = {o["set"]["name"]: o["set"] for o in items if "set" in o}
    assert sets[SET]["type"] == "ipv4_addr" and sets[SET]["flags"] == ["timeout"]
    assert sets[SET + "-v6"]["type"] == "ipv6_addr" and sets[SET + "-v6"]["flags"] == ["timeout"]
    (chain,) = [o["chain"] for o in items if "chain" in o]
    assert (chain["hook"], chain["prio"], chain["policy"]) == ("input", -10, "accept")
    assert len(handles) == 2
    assert fw.updates_timeouts is not None
    assert fw._intact()  # the drift check's cheap test
    tables = run_in(ns, ["nft", "list", "tables"], check=True).stdout.split("\n")
    assert [t for t in tables if t] == [f"table inet {TABLE}"]  # the probe table is gone


def test_bans_timeouts_permanent_and_unban(ns: str) -> None:
    fw = make_fw(ns)
    fw.ensure()
    assert fw.apply([(ip("203.0.113.7"), 600), (ip("2001:db8::7"), 0)]) == 2
    members = dict(fw.list_members())
    assert 590 <= members["203.0.113.7"] <= 600
    assert members["2001:db8::7"] == 0  # permanent: no timeout in the kernel
    assert fw.contains(ip("203.0.113.7")) and not fw.contains(ip("203.0.113.8"))
    fw.apply([(ip("203.0.113.7"), 9000)])  # an extended ban is extended in the kernel
    assert dict(fw.list_members())["203.0.113.7"] > 8000
    fw.apply([(ip("203.0.113.7"), 30)])  # ... and a shortened one shortened (ipset -exist)
    assert dict(fw.list_members())["203.0.113.7"] <= 30
    # Unknown elements unban without error (add-then-delete in the same transaction).
    assert fw.apply([], unbans=[ip("2001:db8::7"), ip("198.51.100.1")]) == 2
    assert [m for m, _ in fw.list_members()] == ["203.0.113.7"]


def test_old_kernel_form_rearms_timeouts(ns: str) -> None:
    """Kernels before 6.10 keep an element's timeout on `add`: fsguard then writes
    add/delete/add, which must re-arm it on any kernel."""
    fw = make_fw(ns)
    fw.ensure()
    fw.updates_timeouts = False
    fw.apply([(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 0)])
    fw.apply([(ip("192.0.2.1"), 7200), (ip("192.0.2.2"), 50)])
    members = dict(fw.list_members())
    assert members["192.0.2.1"] > 7000 and 0 < members["192.0.2.2"] <= 50


def test_ipv6_prefixes(ns: str) -> None:
    fw = make_fw(ns, ipv6_prefix=64)
    fw.ensure()
    fw.apply([(ip("2001:db8:1:2::99"), 60), (ip("2001:db8:1:2::5"), 60)])
    assert [m for m, _ in fw.list_members()] == ["2001:db8:1:2::/64"]
    raw = run_in(ns, ["nft", "list", "set", "inet", TABLE, SET + "-v6"], check=True).stdout
    assert "2001:db8:1:2:: timeout" in raw  # the network address, looked up masked
    assert fw.contains(ip("2001:db8:1:2::1"))
    assert not fw.contains(ip("2001:db8:1:3::1"))
    with pytest.raises(ValueError):
        fw.apply([(ipaddress.ip_network("2001:db8::/48"), 60)])
    fw.apply([], unbans=[ip("2001:db8:1:2::abcd")])  # a bare address is deleted exactly:
    assert [m for m, _ in fw.list_members()] == ["2001:db8:1:2::/64"]  # not the /64 ban
    fw.apply([], unbans=[fw.element(ip("2001:db8:1:2::abcd"))])  # as callers do
    assert fw.list_members() == []


def test_unaligned_foreign_v6_entry_is_reported_as_is(ns: str) -> None:
    """A host address added by hand to the prefix set never matches (the lookup is
    masked): it is listed bare, so reconcile removes exactly it, not the /64 ban."""
    fw = make_fw(ns, ipv6_prefix=64)
    fw.ensure()
    fw.apply([(ip("2001:db8:7::1"), 600)])
    run_in(ns, ["nft", "add", "element", "inet", TABLE, SET + "-v6", "{ 2001:db8:7::5 }"],
           check=True)  # fmt: skip
    assert sorted(m for m, _ in fw.list_members()) == ["2001:db8:7::/64", "2001:db8:7::5"]
    result = fw.reconcile(want_of(fw, ["2001:db8:7::/64"], time.time() + 600), keep_foreign=False)
    assert (result.removed_foreign, result.added, result.errors) == (1, 0, [])
    assert [m for m, _ in fw.list_members()] == ["2001:db8:7::/64"]


def test_kernel_expires_elements(ns: str) -> None:
    fw = make_fw(ns, ipv6_prefix=64)
    fw.ensure()
    fw.apply([(ip("192.0.2.9"), 1), (ip("2001:db8:9::1"), 1), (ip("192.0.2.10"), 600)])
    assert len(fw.list_members()) == 3
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(fw.list_members()) > 1:
        time.sleep(0.2)
    assert [m for m, _ in fw.list_members()] == ["192.0.2.10"]
    assert not fw.contains(ip("192.0.2.9")) and not fw.contains(ip("2001:db8:9::1"))


def test_invalid_input_never_reaches_nft(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fw = make_fw(ns)
    fw.ensure()
    calls: list[object] = []
    monkeypatch.setattr(fw, "_run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: calls.append(a))
    with pytest.raises((TypeError, ValueError)):
        fw.apply([("1.2.3.4 }\nflush ruleset", 60)])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        fw.apply([(ipaddress.ip_network("10.0.0.0/8"), 60)])
    with pytest.raises(ValueError):
        fw.apply([(ip("192.0.2.1"), -5)])
    assert calls == []


def test_dry_run_logs_and_runs_nothing(ns: str, caplog: pytest.LogCaptureFixture) -> None:
    fw = make_fw(ns, dry_run=True)
    caplog.set_level("INFO")
    fw.ensure()
    fw.apply([(ip("203.0.113.7"), 60), (ip("2001:db8::1"), 0)])
    assert sorted(m for m, _ in fw.list_members()) == ["2001:db8::1", "203.0.113.7"]
    assert fw.contains(ip("203.0.113.7"))
    assert run_in(ns, ["nft", "list", "ruleset"], check=True).stdout.strip() == ""
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"add element inet {TABLE} {SET} {{\n203.0.113.7 timeout 60s\n}}" in logged
    assert f"table inet {TABLE} {{" in logged


def test_missing_nft_is_a_clear_error(ns: str) -> None:
    fw = NftBackend(TABLE, SET, default_timeout=60, command_prefix=["/nonexistent/wrapper"])
    with pytest.raises(FirewallError, match="install"):
        fw.ensure()


def test_restart_reconcile_100k(ns: str) -> None:
    """100,000 stored bans after a reboot (empty kernel): all re-added with their
    remaining timeout; a second pass changes nothing; foreign entries go (or stay)."""
    now = time.time()
    base = int(ipaddress.IPv4Address("10.64.0.0"))
    ips = [str(ipaddress.IPv4Address(base + i)) for i in range(99_990)]
    ips += [f"2001:db8:{i:x}::1" for i in range(10)]
    fw = make_fw(ns)
    want = want_of(fw, ips, now + 3000)  # banned 10 minutes ago for an hour
    result = fw.reconcile(want, keep_foreign=False)  # no table yet: created first
    assert (result.kernel_before, result.added, result.errors) == (0, 100_000, [])
    members = dict(fw.list_members())
    assert len(members) == 100_000
    assert all(2900 <= t <= 3000 for t in members.values())  # remaining, not the full hour
    run_in(ns, ["nft", "add", "element", "inet", TABLE, SET, "{ 198.51.100.77 }"], check=True)
    want = want_of(fw, ips, now + 3000)  # as the ledger does: remaining time, recomputed
    kept = make_fw(ns).reconcile(want, keep_foreign=True)
    assert (kept.added, kept.retimed, kept.kept_foreign) == (0, 0, 1)
    want = want_of(fw, ips, now + 3000)
    again = make_fw(ns).reconcile(want, keep_foreign=False)
    assert (again.added, again.retimed, again.removed_foreign) == (0, 0, 1)
    assert not make_fw(ns).contains(ip("198.51.100.77"))


def test_flushed_ruleset_is_rebuilt_by_reconcile(ns: str) -> None:
    """The drift check's path: after `nft flush ruleset` (a distro's nftables reload)
    reconcile recreates the table and re-adds what the ledger wants."""
    fw = make_fw(ns)
    fw.ensure()
    fw.apply([(ip("192.0.2.8"), 600)])
    run_in(ns, ["nft", "flush", "ruleset"], check=True)
    assert not fw._intact()
    result = fw.reconcile(want_of(fw, ["192.0.2.8"], time.time() + 600), keep_foreign=False)
    assert (result.added, result.errors) == (1, [])
    assert fw.contains(ip("192.0.2.8"))
    assert nr.differences(fw.spec, nr.parse_table(json.dumps({"nftables": table_json(ns)}))) == []
    # Only the chain deleted (its sets and elements stay): rebuilt, elements kept.
    run_in(ns, ["nft", "delete", "chain", "inet", TABLE, "input"], check=True)
    assert not fw._intact()
    result = fw.reconcile(want_of(fw, ["192.0.2.8"], time.time() + 600), keep_foreign=False)
    assert (result.added, result.retimed, result.errors) == (0, 0, [])
    assert nr.differences(fw.spec, nr.parse_table(json.dumps({"nftables": table_json(ns)}))) == []


def test_parameter_change_migrates_keeping_elements(ns: str) -> None:
    now = time.time()
    fw64 = make_fw(ns, ipv6_prefix=64)
    fw64.ensure()
    fw64.apply([(ip("192.0.2.1"), 600), (ip("2001:db8:5::1"), 600)])
    fw128 = make_fw(ns, ipv6_prefix=128)
    assert fw128.ensure() == [SET + "-v6"]
    result = fw128.reconcile(
        want_of(fw128, ["192.0.2.1", "2001:db8:5::1"], now + 600), keep_foreign=False
    )
    assert (result.added, result.removed_foreign) == (1, 0)
    assert (
        nr.differences(fw128.spec, nr.parse_table(json.dumps({"nftables": table_json(ns)}))) == []
    )
    members = dict(fw128.list_members())
    assert 590 <= members["192.0.2.1"] <= 600  # carried over with its timeout
    assert "2001:db8:5::1" in members  # the /64 could not be kept: reconcile re-added it


def test_prefix_change_converts_elements(ns: str) -> None:
    fw64 = make_fw(ns, ipv6_prefix=64)
    fw64.ensure()
    fw64.apply([(ip("2001:db8:5:6::1"), 600), (ip("192.0.2.1"), 0)])
    fw48 = make_fw(ns, ipv6_prefix=48)
    assert fw48.ensure() == [SET + "-v6"]  # same set type, new mask: elements converted
    assert dict(fw48.list_members()).keys() == {"2001:db8:5::/48", "192.0.2.1"}
    assert fw48.contains(ip("2001:db8:5:ffff::9"))


def test_set_at_its_size_limit_fails_per_element(ns: str) -> None:
    """A real refusal: the kernel rejects elements beyond the set's size. Exactly the
    refused elements are reported; everything else is in the kernel, nothing more."""
    spec = nr.table_spec(TABLE, SET, 128)
    text = "\n".join(spec.render()).replace(f"size {nr.SET_SIZE}", "size 3", 1)
    run_in(ns, ["nft", "-f", "-"], input=text, check=True)
    fw = make_fw(ns)
    fw.ensure()  # size is not a migrated parameter: the small set is kept
    targets = [ip(f"192.0.2.{i}") for i in range(1, 6)]
    with pytest.raises(FirewallError) as info:
        fw.apply([(t, 60) for t in targets] + [(ip("2001:db8::1"), 60)])
    failed = [elem for elem, _ in info.value.failed]
    assert len(failed) == 2 and all("Too many open files" in m for _, m in info.value.failed)
    assert info.value.applied == 4
    in_kernel = {m for m, _ in fw.list_members()}
    assert in_kernel == {str(t) for t in targets} - set(failed) | {"2001:db8::1"}


def _stand_in(tmp_path: Path, body: str) -> str:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "nft"
    script.write_text("#!/bin/sh\n" + body.replace("REAL", REAL_NFT))
    script.chmod(0o755)
    return str(bindir)


def test_stand_in_nft_refusing_an_element(
    ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw = make_fw(ns)
    fw.ensure()
    bindir = _stand_in(
        tmp_path,
        """
if [ "$1" = "-f" ]; then
  input=$(cat)
  line=$(printf '%s\\n' "$input" | grep -n '^192[.]0[.]2[.]66' | head -1 | cut -d: -f1)
  if [ -n "$line" ]; then
    echo "/dev/stdin:$line:1-10: Error: Could not process rule: Operation not permitted" >&2
    exit 1
  fi
  printf '%s\\n' "$input" | exec REAL -f -
fi
exec REAL "$@"
""",
    )
    monkeypatch.setenv("PATH", f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin")
    bans = [(ip("192.0.2.1"), 60), (ip("192.0.2.66"), 60), (ip("192.0.2.2"), 60)]
    with pytest.raises(FirewallError) as info:
        fw.apply(bans)
    assert info.value.failed == [("192.0.2.66", "Could not process rule: Operation not permitted")]
    assert info.value.applied == 2
    assert sorted(m for m, _ in fw.list_members()) == ["192.0.2.1", "192.0.2.2"]


def test_stand_in_nft_failing_or_hanging_fails_everything(
    ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw = make_fw(ns, command_timeout=1.0)
    fw.ensure()
    bindir = _stand_in(
        tmp_path,
        """
if [ "$1" = "-f" ]; then
  input=$(cat)
  case "$input" in *192.0.2.99*) exec sleep 30 ;; esac
  echo "Error: Could not process rule: Cannot allocate memory" >&2
  exit 1
fi
exec REAL "$@"
""",
    )
    monkeypatch.setenv("PATH", f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin")
    with pytest.raises(FirewallError) as info:
        fw.apply([(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 60)])
    assert sorted(e for e, _ in info.value.failed) == ["192.0.2.1", "192.0.2.2"]
    assert info.value.applied == 0
    with pytest.raises(FirewallError, match="timed out") as hung:
        fw.apply([(ip("192.0.2.99"), 60)])
    assert hung.value.failed == [("192.0.2.99", "timeout")]
    assert fw.list_members() == []


def test_real_drop_v4_and_v6_over_veth() -> None:
    with netns("nsrv") as srv, netns("natk") as atk:
        veth_pair(srv, "203.0.113.1/24", atk, ["203.0.113.7/24", "203.0.113.9/24"])
        run_in(srv, ["ip", "addr", "add", "2001:db8::1/64", "dev", "lo"], check=True)
        fw = NftBackend(
            "fsguard", SET, default_timeout=60, command_prefix=["ip", "netns", "exec", srv]
        )
        fw.ensure()
        assert udp_reaches(atk, "203.0.113.7", srv, "203.0.113.1", 5060)
        fw.apply([(ip("203.0.113.7"), 60)])
        assert not udp_reaches(atk, "203.0.113.7", srv, "203.0.113.1", 5060)
        assert udp_reaches(atk, "203.0.113.9", srv, "203.0.113.1", 5060)
        fw.apply([], unbans=[ip("203.0.113.7")])
        assert udp_reaches(atk, "203.0.113.7", srv, "203.0.113.1", 5060)
    with netns("nsrv6") as srv, netns("natk6") as atk:
        veth_pair(srv, "2001:db8::1/64", atk, ["2001:db8::7/64", "2001:db8::9/64"])
        fw = NftBackend(
            "fsguard", SET, default_timeout=60, command_prefix=["ip", "netns", "exec", srv]
        )
        fw.ensure()
        fw.apply([(ip("2001:db8::7"), 60)])
        assert udp_reaches(atk, "2001:db8::9", srv, "2001:db8::1", 5060)
        assert not udp_reaches(atk, "2001:db8::7", srv, "2001:db8::1", 5060)


def test_real_drop_ipv6_prefix_over_veth() -> None:
    """ipv6_ban_prefix 64: banning one address drops its whole /64 (masked lookup);
    a source in the next /64 arrives."""
    with netns("psrv") as srv, netns("patk") as atk:
        veth_pair(srv, "2001:db8::1/64", atk,
                  ["2001:db8::7/64", "2001:db8::9/64", "2001:db8:0:1::9/64"])  # fmt: skip
        run_in(srv, ["ip", "addr", "add", "2001:db8:0:1::1/64", "dev", _ifname(srv), "nodad"],
               check=True)  # fmt: skip
        fw = NftBackend(
            "fsguard", SET, default_timeout=60, ipv6_prefix=64,
            command_prefix=["ip", "netns", "exec", srv],
        )  # fmt: skip
        fw.ensure()
        assert udp_reaches(atk, "2001:db8::9", srv, "2001:db8::1", 5060)
        fw.apply([(ip("2001:db8::7"), 60)])
        assert not udp_reaches(atk, "2001:db8::7", srv, "2001:db8::1", 5060)
        assert not udp_reaches(atk, "2001:db8::9", srv, "2001:db8::1", 5060)
        assert udp_reaches(atk, "2001:db8:0:1::9", srv, "2001:db8:0:1::1", 5060)


def _ifname(ns: str) -> str:
    out = run_in(ns, ["ip", "-o", "link", "show", "type", "veth"], check=True).stdout
    return out.split(":")[1].strip().split("@")[0]


def test_coexistence_iptables_nft_and_higher_priority_accept() -> None:
    """An iptables-nft ACCEPT for the banned source (priority 0) and an nft chain at
    priority -300 accepting it: the ban still wins (accept ends only its own base
    chain; drop is final). Their DROP of a clean source still drops; teardown leaves
    their tables alone."""
    with netns("csrv") as srv, netns("catk") as atk:
        veth_pair(srv, "203.0.113.1/24", atk, ["203.0.113.7/24", "203.0.113.9/24",
                                                "203.0.113.11/24"])  # fmt: skip
        run_in(srv, ["iptables", "-A", "INPUT", "-s", "203.0.113.7", "-j", "ACCEPT"], check=True)
        run_in(srv, ["iptables", "-A", "INPUT", "-s", "203.0.113.11", "-j", "DROP"], check=True)
        early = (
            "table inet early {\n chain pre { type filter hook input priority -300; "
            "policy accept;\n ip saddr 203.0.113.7 accept\n }\n}\n"
        )
        run_in(srv, ["nft", "-f", "-"], input=early, check=True)
        fw = NftBackend(
            "fsguard", SET, default_timeout=60, command_prefix=["ip", "netns", "exec", srv]
        )
        fw.ensure()
        fw.apply([(ip("203.0.113.7"), 60)])
        assert not udp_reaches(atk, "203.0.113.7", srv, "203.0.113.1", 5060)
        assert udp_reaches(atk, "203.0.113.9", srv, "203.0.113.1", 5060)
        assert not udp_reaches(atk, "203.0.113.11", srv, "203.0.113.1", 5060)
        rules = run_in(srv, ["iptables", "-S", "INPUT"], check=True).stdout
        assert "-A INPUT -s 203.0.113.7/32 -j ACCEPT" in rules  # iptables still reads its own
        assert fw.ruleset()["counters"][0]["packets"] >= 1
        assert fw.teardown() is True
        tables = run_in(srv, ["nft", "list", "tables"], check=True).stdout
        assert "inet fsguard" not in tables
        assert "table ip filter" in tables and "table inet early" in tables
        assert udp_reaches(atk, "203.0.113.7", srv, "203.0.113.1", 5060)
        assert fw.teardown() is False


def test_start_reads_the_table_once(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """nft fetches every element before any list (seconds at 100k): the start-up
    ensure's read serves the reconcile right after it, once, and only without a write."""
    first = make_fw(ns)
    first.ensure()
    first.apply([(ip("192.0.2.1"), 600)])
    fw = make_fw(ns)
    lists: list[list[str]] = []
    real = fw._run

    def counting(args: Any, **kw: Any) -> Any:
        if "list" in args and TABLE in args:  # not the throwaway probe table
            lists.append(list(args))
        return real(args, **kw)

    monkeypatch.setattr(fw, "_run", counting)
    fw.ensure()
    assert len(lists) == 1
    assert [m for m, _ in fw.list_members()] == ["192.0.2.1"]  # ensure's read, reused
    assert len(lists) == 1
    fw.list_members()
    assert len(lists) == 2  # never a second time
    fw.ensure()
    fw.apply([(ip("192.0.2.2"), 600)])  # a write in between: read again
    assert sorted(m for m, _ in fw.list_members()) == ["192.0.2.1", "192.0.2.2"]
    assert len(lists) == 4
