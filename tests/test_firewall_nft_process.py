"""The firewall process on the nftables backend, for real: a network namespace, the
SQLite store in a tmp dir, decisions over ZeroMQ, the kernel read back with nft."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import zmq

from fsguard_firewall.nft_backend import NftBackend
from shared import addresses
from shared.messages import DecisionAck, decode, encode
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from shared.ops.firewall_bans import BanRequest, IpRequest, UnbanRequest
from tests.firewall_helpers import SET, decision, launch, stop, terminate, wait_for, write_config
from tests.netns_helpers import REAL_NFT, requires_netns, requires_nft, run_in
from tests.system_helpers import FSGUARD

pytestmark = [pytest.mark.netns, requires_netns, requires_nft]

TABLE = "fsgproc"


def nft_members(ns: str) -> dict[str, int]:
    backend = NftBackend(TABLE, SET, default_timeout=0, command_prefix=["ip", "netns", "exec", ns])
    return dict(backend.list_members())


def nft_config(tmp_path: Path, **security: object) -> tuple[Path, str]:
    config, runtime = write_config(
        tmp_path, firewall_backend="nftables", nftables_table=TABLE, **security
    )
    cfg = json.loads(config.read_text())
    cfg["workers"] = {"count": 1}
    config.write_text(json.dumps(cfg))
    return config, runtime


class Worker0:
    """Stands in for worker 0: pushes decisions, collects its acks."""

    def __init__(self, runtime: str) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.acks = ctx.socket(zmq.PULL)
        self.acks.bind(addresses.worker_acks(runtime, 0))
        self.push = ctx.socket(zmq.PUSH)
        self.push.connect(addresses.firewall_decisions(runtime))
        self.got: dict[str, list[DecisionAck]] = {}

    def send(self, id: str, ip: str, duration: float = 600) -> None:
        self.push.send(encode(decision(id, ip, duration=duration, worker=0)))

    def collect(self, until: object, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (callable(until) and until()):
            if self.acks.poll(100):
                msg = decode(self.acks.recv())
                if isinstance(msg, DecisionAck) and msg.id:
                    self.got.setdefault(msg.id, []).append(msg)

    def ok(self, id: str) -> bool:
        return any(a.ok for a in self.got.get(id, []))

    def close(self) -> None:
        self.push.close(0)
        self.acks.close(0)


def test_bans_restart_reboot_and_iptables_op(ns: str, tmp_path: Path) -> None:
    config, runtime = nft_config(tmp_path)
    proc = launch(ns, config, runtime)
    worker = Worker0(runtime)
    try:
        worker.send("w0-1-1", "203.0.113.10", 600)
        worker.send("w0-1-2", "2001:db8::10", 0)
        worker.collect(lambda: worker.ok("w0-1-1") and worker.ok("w0-1-2"))
        assert worker.ok("w0-1-1") and worker.ok("w0-1-2")
        members = nft_members(ns)
        assert set(members) == {"203.0.113.10", "2001:db8::10"}
        assert 590 <= members["203.0.113.10"] <= 600 and members["2001:db8::10"] == 0
        info = proc.call(fwo.IPTABLES, Empty())
        assert info.backend == "nftables"
        assert (info.chain, info.ipset, info.count) == ("input", SET, 2)
        assert sorted(info.blockedIps or []) == ["2001:db8::10", "203.0.113.10"]
        assert info.ruleset is not None and info.ruleset["table"] == f"inet {TABLE}"
        assert info.ruleset["chain"] == {"hook": "input", "prio": -10, "policy": "accept"}
        # The ipset backend is not touched.
        assert run_in(ns, ["ipset", "list", "-n"], check=True).stdout.strip() == ""
        assert "match-set" not in run_in(ns, ["iptables", "-S"], check=True).stdout
        terminate(proc)

        time.sleep(1.2)
        run_in(ns, ["nft", "delete", "table", "inet", TABLE], check=True)  # a reboot
        proc = launch(ns, config, runtime)
        after = nft_members(ns)
        assert set(after) == {"203.0.113.10", "2001:db8::10"}
        assert 590 <= after["203.0.113.10"] <= 599  # the remaining time, not 600 again
        assert proc.last_reconcile().added == 2
        proc.call(fwo.UNBAN, UnbanRequest(ip="203.0.113.10"))
        assert set(nft_members(ns)) == {"2001:db8::10"}
        terminate(proc)
    finally:
        worker.close()
        stop(proc.popen)


def test_drift_check_rebuilds_a_flushed_ruleset(ns: str, tmp_path: Path) -> None:
    config, runtime = nft_config(tmp_path, drift_check_interval=1)
    proc = launch(ns, config, runtime)
    try:
        proc.call(fwo.BAN, BanRequest(ip="198.51.100.30", duration=600))
        run_in(ns, ["nft", "flush", "ruleset"], check=True)  # `systemctl reload nftables`
        wait_for(lambda: "198.51.100.30" in nft_members_or_empty(ns), 10)
        assert proc.call(fwo.STATS, Empty()).drift_repaired >= 1
        terminate(proc)
    finally:
        stop(proc.popen)


def nft_members_or_empty(ns: str) -> dict[str, int]:
    try:
        return nft_members(ns)
    except Exception:
        return {}


def test_switch_backend_reapplies_stored_bans_then_teardown(ns: str, tmp_path: Path) -> None:
    config, runtime = write_config(tmp_path, nftables_table=TABLE)  # ipset backend
    proc = launch(ns, config, runtime)
    try:
        proc.call(fwo.BAN, BanRequest(ip="192.0.2.40", duration=600))
        proc.call(fwo.BAN, BanRequest(ip="2001:db8::40", permanent=True))
        assert proc.call(fwo.IPTABLES, Empty()).backend == "ipset"
        terminate(proc)

        cfg = json.loads(config.read_text())
        cfg["security"]["firewall_backend"] = "nftables"
        config.write_text(json.dumps(cfg))
        proc = launch(ns, config, runtime)
        assert set(nft_members(ns)) == {"192.0.2.40", "2001:db8::40"}  # re-applied
        assert proc.call(fwo.IPTABLES, Empty()).backend == "nftables"
        assert set(run_in(ns, ["ipset", "list", "-n"], check=True).stdout.split()) == {
            SET,
            SET + "-v6",
        }  # fmt: skip  (the old backend stays until torn down)

        refused = run_in(ns, [FSGUARD, "teardown", "--backend", "nftables",
                              "--config", str(config)], timeout=60)  # fmt: skip
        assert refused.returncode == 2 and "running firewall" in refused.stderr
        done = run_in(ns, [FSGUARD, "teardown", "--backend", "ipset", "--config", str(config)],
                      timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert run_in(ns, ["ipset", "list", "-n"], check=True).stdout.strip() == ""
        for binary in ("iptables", "ip6tables"):
            assert "match-set" not in run_in(ns, [binary, "-S"], check=True).stdout
        assert set(nft_members(ns)) == {"192.0.2.40", "2001:db8::40"}
        terminate(proc)
    finally:
        stop(proc.popen)


def test_nft_refusal_is_never_acknowledged_then_retried(
    ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in `nft` first on the firewall's PATH refuses one element (as nft reports
    it: its input line). Only that decision is not acknowledged ok nor recorded, and the
    kernel lacks only it; once nft accepts again the ledger's retry lands it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    flag = tmp_path / "refuse"
    flag.write_text("1")
    script = bindir / "nft"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-f" ] && [ -e {flag} ]; then
  input=$(cat)
  line=$(printf '%s\\n' "$input" | grep -n '^198[.]51[.]100[.]66' | head -1 | cut -d: -f1)
  if [ -n "$line" ]; then
    echo "/dev/stdin:$line:1-13: Error: Could not process rule: Operation not permitted" >&2
    exit 1
  fi
  printf '%s\\n' "$input" | exec {REAL_NFT} -f -
fi
exec {REAL_NFT} "$@"
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin")
    config, runtime = nft_config(tmp_path)
    proc = launch(ns, config, runtime)
    worker = Worker0(runtime)
    try:
        worker.send("w0-2-1", "198.51.100.65")
        worker.send("w0-2-2", "198.51.100.66")
        worker.send("w0-2-3", "198.51.100.67")
        worker.collect(lambda: len(worker.got) == 3)
        assert worker.ok("w0-2-1") and worker.ok("w0-2-3")
        refused = worker.got["w0-2-2"]
        assert not any(a.ok for a in refused) and not any(a.final for a in refused)
        assert "Operation not permitted" in refused[0].error
        assert set(nft_members(ns)) == {"198.51.100.65", "198.51.100.67"}
        assert proc.call(fwo.BLACKLIST_GET, IpRequest(ip="198.51.100.66")).blacklisted is False
        assert set(proc.call(fwo.BLACKLIST, Empty()).keys()) == {"198.51.100.65", "198.51.100.67"}

        flag.unlink()  # nft accepts again: the retry (backoff from 1 s) lands the ban
        worker.collect(lambda: worker.ok("w0-2-2"), timeout=15)
        assert worker.ok("w0-2-2")
        assert "198.51.100.66" in nft_members(ns)
        assert proc.call(fwo.BLACKLIST_GET, IpRequest(ip="198.51.100.66")).blacklisted is True
        terminate(proc)
    finally:
        worker.close()
        stop(proc.popen)
