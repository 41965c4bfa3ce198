"""Durable firewall state, for real: the firewall process in a network namespace, its
SQLite store in a tmp state dir, the kernel sets inspected with ipset."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from fsguard_firewall.kernel import MAX_TIMEOUT
from shared import addresses
from shared.messages import DecisionAck, decode, encode
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from shared.ops.firewall_bans import BanRequest, BlacklistEntry, UnbanRequest
from shared.ops.firewall_lists import PatternAddRequest, WhitelistAddRequest, WhitelistEntry
from tests.firewall_helpers import (
    SET,
    Proc,
    decision,
    launch,
    run_to_exit,
    stop,
    terminate,
    timeouts,
    wait_for,
    write_config,
)
from tests.netns_helpers import requires_netns, run_in

pytestmark = [pytest.mark.netns, requires_netns]
FSGUARD = str(Path(sys.executable).parent / "fsguard")


def lists(proc: Proc) -> tuple[dict[str, BlacklistEntry], dict[str, WhitelistEntry], list[str]]:
    """The blacklist, whitelist and untrusted patterns the firewall answers with."""
    return (proc.call(fwo.BLACKLIST, Empty()), proc.call(fwo.WHITELIST, Empty()),
            proc.call(fwo.UNTRUSTED, Empty()))  # fmt: skip


def reboot(ns: str) -> None:
    """What a reboot does to the kernel: no rules, no sets."""
    for binary in ("iptables", "ip6tables"):
        run_in(ns, [binary, "-F"], check=True)
    run_in(ns, ["ipset", "destroy"], check=True)


def test_restart_and_reboot_keep_bans_and_lists(ns: str, tmp_path: Path) -> None:
    config, runtime = write_config(tmp_path)
    cfg = json.loads(config.read_text())
    cfg["workers"] = {"count": 1}
    config.write_text(json.dumps(cfg))
    proc = launch(ns, config, runtime)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    acks = ctx.socket(zmq.PULL)  # stands in for worker 0's ack socket
    acks.bind(addresses.worker_acks(runtime, 0))
    push = ctx.socket(zmq.PUSH)
    push.connect(addresses.firewall_decisions(runtime))
    try:
        push.send(encode(decision("w0-1-1", "203.0.113.10", duration=600, worker=0)))
        push.send(encode(decision("w0-1-2", "2001:db8::10", duration=0, worker=0)))
        push.send(encode(decision("w0-1-3", "203.0.113.11", duration=40 * 86400, worker=0)))
        got: dict[str, bool] = {}
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            if acks.poll(200):
                msg = decode(acks.recv())
                assert isinstance(msg, DecisionAck)
                if msg.id:
                    got[msg.id] = msg.ok
        assert got == {"w0-1-1": True, "w0-1-2": True, "w0-1-3": True}
        proc.call(fwo.BAN, BanRequest(ip="192.0.2.50", permanent=True, reason="manual"))
        listed = WhitelistAddRequest(ip="198.51.100.20", userId="1000", permanent=True)
        proc.call(fwo.WHITELIST_ADD, listed)
        proc.call(fwo.UNTRUSTED_ADD, PatternAddRequest(pattern="*.evil.example"))
        before = lists(proc)
        kernel_before = timeouts(ns)
        assert kernel_before["203.0.113.11"] > MAX_TIMEOUT - 10  # clamped in the kernel...
        assert before[0]["203.0.113.11"].expiresAt > "2000"
        terminate(proc)

        # Restart: every ban and list entry is back, the kernel untouched.
        proc = launch(ns, config, runtime)
        assert lists(proc) == before
        assert set(timeouts(ns)) == set(kernel_before)
        assert proc.last_reconcile().added == 0
        # ...the stored expiry is the real one (40 days), re-armed before the kernel's lapses.
        exp = before[0]["203.0.113.11"].expiresAt
        assert exp[:10] > before[0]["203.0.113.10"].expiresAt[:10]
        terminate(proc)

        # Reboot: sets gone. Start restores every ban with its remaining timeout.
        time.sleep(1.6)
        reboot(ns)
        proc = launch(ns, config, runtime)
        after = timeouts(ns)
        assert set(after) == set(kernel_before) == {
            "203.0.113.10", "2001:db8::10", "203.0.113.11", "192.0.2.50",
        }  # fmt: skip
        assert 590 <= after["203.0.113.10"] <= 598  # the remaining time, not 600 again
        assert after["2001:db8::10"] == 0 and after["192.0.2.50"] == 0  # permanent
        assert after["203.0.113.11"] >= MAX_TIMEOUT - 2  # 40 days: clamped, re-armed later
        assert proc.last_reconcile().added == 4
        rules = run_in(ns, ["iptables", "-S", "INPUT"], check=True).stdout
        assert rules.count(f"--match-set {SET} src -j DROP") == 1
        # A re-sent decision (same id) after the restart is acknowledged, not re-applied.
        push.send(encode(decision("w0-1-1", "203.0.113.10", duration=600, worker=0)))
        wait_for(lambda: proc.call(fwo.STATS, Empty()).store_duplicates == 1)
        # Unban removes kernel entry and row together; whitelisting a banned address too.
        proc.call(fwo.UNBAN, UnbanRequest(ip="203.0.113.10"))
        proc.call(fwo.WHITELIST_ADD, WhitelistAddRequest(ip="192.0.2.50"))
        assert set(timeouts(ns)) == {"2001:db8::10", "203.0.113.11"}
        terminate(proc)
        proc = launch(ns, config, runtime)
        assert set(proc.call(fwo.BLACKLIST, Empty()).keys()) == {"2001:db8::10", "203.0.113.11"}
        assert "192.0.2.50" in proc.call(fwo.WHITELIST, Empty())
        terminate(proc)
    finally:
        push.close(0)
        acks.close(0)
        stop(proc.popen)


@pytest.mark.parametrize("keep", [False, True])
def test_foreign_entries_and_reconcile_verb(ns: str, tmp_path: Path, keep: bool) -> None:
    config, runtime = write_config(tmp_path, keep_foreign_entries=keep)
    run_in(ns, ["ipset", "create", SET, "hash:ip", "timeout", "3600"], check=True)
    run_in(ns, ["ipset", "add", SET, "203.0.113.60", "timeout", "0"], check=True)
    proc = launch(ns, config, runtime)
    try:
        rec = proc.last_reconcile()
        # The store is empty: its kernel entry is adopted (or kept unrecorded), never wiped.
        assert (rec.adopted, rec.kept_foreign) == ((0, 1) if keep else (1, 0))
        assert rec.removed_foreign == 0 and "203.0.113.60" in timeouts(ns)
        assert ("203.0.113.60" in proc.call(fwo.BLACKLIST, Empty())) is not keep
        # On demand, through the running firewall: a foreign entry added meanwhile, and a
        # stored ban deleted from the kernel behind our back.
        proc.call(fwo.BAN, BanRequest(ip="192.0.2.61", duration=300))
        run_in(ns, ["ipset", "add", SET, "203.0.113.62"], check=True)
        run_in(ns, ["ipset", "del", SET, "192.0.2.61"], check=True)
        out = subprocess.run(
            [FSGUARD, "reconcile", "--config", str(config)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "by the running firewall" in out.stdout
        lines = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1]
                 for line in out.stdout.splitlines()[1:]}  # fmt: skip
        assert lines["re-added to the kernel"] == "1"
        assert lines["kernel entries without a record removed"] == ("0" if keep else "1")
        members = timeouts(ns)
        assert "192.0.2.61" in members and 290 <= members["192.0.2.61"] <= 300
        assert ("203.0.113.62" in members) is keep
        terminate(proc)
        # Directly, with no firewall running (in the namespace: it touches the kernel).
        reboot(ns)
        out = run_in(ns, [FSGUARD, "reconcile", "--config", str(config), "--json"], timeout=30)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["added"] == (1 if keep else 2) and "192.0.2.61" in timeouts(ns)
    finally:
        stop(proc.popen)


def test_set_parameter_migration(ns: str, tmp_path: Path) -> None:
    """hash:ip → hash:net when ipv6_ban_prefix changes (the kernel refuses to swap those:
    the DROP rule moves); a v4 set without timeout support is swapped in place."""
    config, runtime = write_config(tmp_path)
    proc = launch(ns, config, runtime)
    try:
        proc.call(fwo.BAN, BanRequest(ip="2001:db8:1::7", duration=600))
        proc.call(fwo.BAN, BanRequest(ip="203.0.113.70", duration=600))
        terminate(proc)
        run_in(ns, ["iptables", "-F"], check=True)
        run_in(ns, ["ipset", "destroy", SET], check=True)
        run_in(ns, ["ipset", "create", SET, "hash:ip"], check=True)  # no timeout support
        run_in(ns, ["ipset", "add", SET, "203.0.113.70"], check=True)
        run_in(ns, ["iptables", "-I", "INPUT", "-m", "set", "--match-set", SET, "src",
                    "-j", "DROP"], check=True)  # fmt: skip
        cfg = json.loads(config.read_text())
        cfg["security"]["ipv6_ban_prefix"] = 64
        config.write_text(json.dumps(cfg))
        proc = launch(ns, config, runtime)
        terse = run_in(ns, ["ipset", "list", "-t"], check=True).stdout
        headers = {block.split("\n")[0].split(": ")[1]: block for block in terse.split("\n\n")}
        assert "Type: hash:net" in headers[SET + "-v6"]
        assert "timeout" in headers[SET].split("Header:")[1].split("\n")[0]
        members = timeouts(ns)
        assert set(members) == {"2001:db8:1::/64", "203.0.113.70"}
        assert 0 < members["203.0.113.70"] <= 600  # re-timed from the store
        assert sorted(proc.last_reconcile().migrated) == [SET, SET + "-v6"]
        for binary, name in (("iptables", SET), ("ip6tables", SET + "-v6")):
            rules = run_in(ns, [binary, "-S", "INPUT"], check=True).stdout
            assert rules.count("match-set") == 1 and f"--match-set {name} src" in rules
        assert "fsgmig" not in run_in(ns, ["ipset", "list", "-n"], check=True).stdout
        terminate(proc)
    finally:
        stop(proc.popen)


def test_corrupted_or_unwritable_store_exits_78(ns: str, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "fsguard.db").write_bytes(b"this is not a database" * 100)
    code, out = run_to_exit(ns, config, 10)
    assert code == 78
    assert "state store unusable" in out and "corrupted" in out
    (state / "fsguard.db").unlink()
    # Read-only state dir (root ignores permission bits: a read-only bind mount).
    read_only = f"mount --bind {state} {state} && mount -o remount,bind,ro {state}"
    code, out = run_to_exit(ns, config, 10, read_only)
    assert code == 78
    assert "not writable" in out


def test_fsguard_run_exits_nonzero_on_corrupted_store(ns: str, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    cfg: dict[str, Any] = json.loads(config.read_text())
    cfg["workers"] = {"count": 1}
    cfg["security"]["esl_port"] = 1  # nothing listens: the tree still starts
    cfg["server"] = {"host": "127.0.0.1", "port": "18089"}
    config.write_text(json.dumps(cfg))
    state = tmp_path / "state"
    state.mkdir()
    (state / "fsguard.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    popen = subprocess.Popen(
        ["ip", "netns", "exec", ns, FSGUARD, "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert popen.wait(20) == 78
        err = popen.stderr.read().decode() if popen.stderr else ""
        assert "not restarting" in err and "state store unusable" in err
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()


def test_export_import(ns: str, tmp_path: Path) -> None:
    config, runtime = write_config(tmp_path)
    proc = launch(ns, config, runtime)
    try:
        proc.call(fwo.BAN, BanRequest(ip="203.0.113.80", duration=900))
        proc.call(fwo.WHITELIST_ADD, WhitelistAddRequest(ip="198.51.100.81"))
        out = subprocess.run([FSGUARD, "bans", "export", "--config", str(config)],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert out.returncode == 0, out.stderr
        dump = json.loads(out.stdout)
        assert set(dump["blacklist"]) == {"203.0.113.80"}
        terminate(proc)
    finally:
        stop(proc.popen)
    # A fresh state dir: direct import (no firewall), then a start puts it in the kernel.
    (tmp_path / "state").rename(tmp_path / "old-state")
    bad = dict(dump, blacklist={"10.0.0.1": {"ip": "10.0.0.1", "permanent": True}})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "bans.json").write_text(json.dumps(dump))
    res = subprocess.run(
        [FSGUARD, "bans", "import", str(tmp_path / "bad.json"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2 and "trusted network" in res.stderr  # validated, nothing written
    res = subprocess.run(
        [FSGUARD, "bans", "import", str(tmp_path / "bans.json"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    reboot(ns)
    proc = launch(ns, config, runtime)
    try:
        assert set(proc.call(fwo.BLACKLIST, Empty()).keys()) == {"203.0.113.80"}
        assert "198.51.100.81" in proc.call(fwo.WHITELIST, Empty())
        assert 0 < timeouts(ns)["203.0.113.80"] <= 900
        # Through the running firewall: the import reaches the kernel at once.
        extra = {
            "format": "fsguard-state",
            "version": 1,
            "blacklist": {"203.0.113.82": {"ip": "203.0.113.82", "permanent": True}},
        }
        (tmp_path / "extra.json").write_text(json.dumps(extra))
        res = subprocess.run([FSGUARD, "bans", "import", str(tmp_path / "extra.json"),
                              "--config", str(config)], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert timeouts(ns)["203.0.113.82"] == 0
        terminate(proc)
    finally:
        stop(proc.popen)
