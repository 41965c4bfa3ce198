"""The ban ledger against the real kernel (issue 10 §3 a-e).

The Firewall runs in-process with its real SQLite store; its kernel backend runs
`ip netns exec <ns> ipset ...` in a namespace of its own. A set created with a tiny
`maxelem` makes `ipset restore` refuse for real; a stand-in `ipset` first on PATH
simulates a kernel that fails or hangs (it passes through to the real one otherwise).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zmq

from fsguard_firewall.durable import Durable
from fsguard_firewall.firewall import Firewall
from fsguard_firewall.kernel import KernelFirewall
from fsguard_firewall.ledger import BanLedger
from fsguard_firewall.selfprotect import SelfProtection
from fsguard_workers.engine import DetectionEngine
from fsguard_workers.outbox import FirewallLink
from shared.config import Config, PathsConfig, SecurityConfig
from shared.control import ControlError
from shared.messages import BanDecision, DecisionAck, ListChange
from shared.ops.base import Empty
from shared.ops.firewall_bans import BanRequest, UnbanRequest
from shared.ops.firewall_state import ListsSnapshot, SnapshotRequest
from tests.netns_helpers import netns, requires_netns, run_in

pytestmark = requires_netns

SET = "fsg-ledger"
REAL_IPSET = shutil.which("ipset", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/ipset"


class Rig:
    def __init__(self, ns: str, fw: Firewall, durable: Durable, flags: Path) -> None:
        self.ns, self.fw, self.durable, self.flags = ns, fw, durable, flags
        self.acks: list[DecisionAck] = []
        fw.ledger.ack = lambda worker, ack: self.acks.append(ack)

    def members(self) -> dict[str, int]:
        out = run_in(self.ns, [REAL_IPSET, "list", "-output", "save", SET], check=True).stdout
        return {p[2]: int(p[4]) if len(p) > 4 else 0
                for p in (line.split() for line in out.splitlines()) if p[0] == "add"}  # fmt: skip

    def ack_of(self, decision_id: str) -> DecisionAck | None:
        found = [a for a in self.acks if a.id == decision_id]
        return found[-1] if found else None

    def kernel(self, mode: str) -> None:
        """'fail': every `ipset restore` exits 1; 'hang': every ipset call hangs; 'ok'."""
        for name in ("fail", "hang"):
            (self.flags / name).unlink(missing_ok=True)
        if mode != "ok":
            (self.flags / mode).touch()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    flags = tmp_path / "flags"
    flags.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "ipset"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{flags}/hang" ]; then sleep 30; fi\n'
        f'if [ -e "{flags}/fail" ] && [ "$1" = restore ]; then\n'
        "  cat >/dev/null; echo 'ipset v7: Kernel error received: simulated' >&2; exit 1\n"
        "fi\n"
        f'exec {REAL_IPSET} "$@"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with netns("ledger") as ns:
        run_in(ns, [REAL_IPSET, "create", SET, "hash:ip", "timeout", "3600", "maxelem", "3"],
               check=True)  # fmt: skip
        config = Config(
            security=SecurityConfig(ipset_name=SET, trusted_networks=["127.0.0.0/8"]),
            paths=PathsConfig(runtime_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "s")),
        )
        kernel = KernelFirewall(SET, "INPUT", default_timeout=3600, command_timeout=1.0,
                                command_prefix=["ip", "netns", "exec", ns])  # fmt: skip
        durable = Durable.open(config)
        fw = Firewall(config, kernel, store=durable.bans)
        # In-process: the host's own addresses are not the namespace's (the firewall
        # process reads its own namespace's; see test_self_protection).
        fw.protect = SelfProtection(config.security.esl_host, read_host=False)
        durable.attach(fw)
        durable.reconcile()
        try:
            yield Rig(ns, fw, durable, flags)
        finally:
            durable.close()


def decision(did: str, ip: str, duration: float = 600, worker: int = 0) -> BanDecision:
    return BanDecision(id=did, ip=ip, rule="failed_auth", reason="test", duration=duration,
                       worker=worker)  # fmt: skip


def wait_retry(rig: Rig) -> None:
    """Let every pending ban's backoff elapse, then run one retry round."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(p.next_at <= time.monotonic() for p in rig.fw.ledger.pending.values()):
            break
        time.sleep(0.05)
    rig.fw.retry_pending()


def test_a_full_set_refuses_for_real_never_acked_retried_until_room(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    fw, store = rig.fw, rig.durable.store
    ips = {f"d{i}": f"192.0.2.{i}" for i in range(1, 5)}
    with caplog.at_level(logging.ERROR, logger="fsguard.firewall"):
        fw.handle_batch([decision(did, ip) for did, ip in ips.items()])
    nacked = [a for a in rig.acks if not a.ok]
    assert len(nacked) == 1 and not nacked[0].final  # the set holds 3: one is refused
    did = nacked[0].id
    ip = ips[did]
    assert set(rig.members()) == set(ips.values()) - {ip}
    assert all(a.ok for a in rig.acks if a.id != did)
    # Never remembered as processed, never recorded: a re-send is not dropped as done.
    assert not store.seen_decision(did) and store.get_ban(ip) is None
    assert fw.ledger.is_pending(ip) and fw.stats.kernel_full == 1
    assert any("full" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    fw.handle_batch([decision(did, ip)])  # the worker re-sends
    last = rig.ack_of(did)
    assert last is not None and not last.ok
    stats = fw.control.op_stats(Empty())
    assert stats.pending_bans == 1 and stats.kernel_full == 1
    # Room again (an unban): the retry lands it, records it, acknowledges it.
    fw.control.op_unban(UnbanRequest(ip=next(v for v in ips.values() if v != ip)))
    wait_retry(rig)
    assert ip in rig.members()
    assert store.seen_decision(did) and store.get_ban(ip) is not None
    acked = rig.ack_of(did)
    assert acked is not None and acked.ok and not fw.ledger.pending


def test_a_timeout_is_retried_and_expiry_gives_up_with_a_final_nack(rig: Rig) -> None:
    fw = rig.fw
    rig.kernel("hang")
    fw.handle_batch([decision("t1", "198.51.100.1", duration=1)])
    ack = rig.ack_of("t1")
    assert ack is not None and not ack.ok and fw.ledger.is_pending("198.51.100.1")
    assert fw.stats.kernel_errors == 1
    rig.kernel("ok")
    time.sleep(1.1)  # the ban's whole duration passes while the kernel hung
    wait_retry(rig)
    final = rig.ack_of("t1")
    assert final is not None and not final.ok and final.final
    assert fw.stats.expired_pending == 1 and not fw.ledger.pending
    assert "198.51.100.1" not in rig.members()
    assert rig.durable.store.get_ban("198.51.100.1") is None


def test_b_failed_extension_leaves_the_earlier_ban_exactly(rig: Rig) -> None:
    fw, store = rig.fw, rig.durable.store
    fw.handle_batch([decision("e1", "203.0.113.5", duration=600)])
    before_row = store.get_ban("203.0.113.5")
    assert before_row is not None and 590 <= rig.members()["203.0.113.5"] <= 600
    rig.kernel("fail")
    fw.handle_batch([decision("e2", "203.0.113.5", duration=0)])  # upgrade to permanent
    assert store.get_ban("203.0.113.5") == before_row  # not removed, not changed
    assert 580 <= rig.members()["203.0.113.5"] <= 600  # kernel entry as it was
    assert fw.ledger.get("203.0.113.5", time.time()) is not None
    # Reconcile (what a restart runs) keeps it too.
    rig.kernel("ok")
    rig.durable.reconcile()
    assert "203.0.113.5" in rig.members()
    wait_retry(rig)  # and the upgrade lands once the kernel takes it
    assert rig.members()["203.0.113.5"] == 0
    row = store.get_ban("203.0.113.5")
    assert row is not None and row.expires is None


def test_c_manual_ban_never_shortens_and_kernel_failure_changes_nothing(rig: Rig) -> None:
    fw, store = rig.fw, rig.durable.store
    fw.control.op_ban(BanRequest(ip="203.0.113.7", permanent=True))
    reply = fw.control.op_ban(BanRequest(ip="203.0.113.7", duration=60))
    assert "already" in reply.message
    assert rig.members()["203.0.113.7"] == 0  # still permanent in the kernel
    row = store.get_ban("203.0.113.7")
    assert row is not None and row.expires is None  # and in the store
    # A longer manual ban extends both.
    fw.control.op_ban(BanRequest(ip="203.0.113.8", duration=60))
    fw.control.op_ban(BanRequest(ip="203.0.113.8", duration=6000))
    assert rig.members()["203.0.113.8"] > 5000
    row = store.get_ban("203.0.113.8")
    assert row is not None and row.expires is not None and row.expires - time.time() > 5000
    # The kernel refuses: nothing recorded, nothing in the kernel.
    rig.kernel("fail")
    with pytest.raises(ControlError):
        fw.control.op_ban(BanRequest(ip="203.0.113.9", duration=60))
    assert store.get_ban("203.0.113.9") is None
    assert "203.0.113.9" not in rig.members()


def _wire(snap: ListsSnapshot) -> ListsSnapshot:
    """The snapshot as a worker receives it: over msgpack, decoded into its type."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=ListsSnapshot)


def test_d_snapshot_carries_the_blacklist_and_a_missed_unban_is_released(rig: Rig) -> None:
    fw, durable = rig.fw, rig.durable
    fw.handle_batch([decision("s1", "192.0.2.10"), decision("s2", "192.0.2.11")])
    snap = durable.op_lists_snapshot(SnapshotRequest())
    assert {ip for ip, _ in snap.blacklist} == {"192.0.2.10", "192.0.2.11"}
    engine = DetectionEngine(fw.config, worker_index=0)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    poller = zmq.Poller()
    link = FirewallLink(ctx, str(Path(durable.store.path).parent), 0, engine.on_list_change,
                        poller)  # fmt: skip
    try:
        link.apply_snapshot(_wire(snap))
        key = engine._key_of_text("192.0.2.10")
        assert key is not None and engine._banned(key, time.monotonic())
        # The unban's ListChange is lost on PUB/SUB (never delivered to this worker)...
        fw.control.op_unban(UnbanRequest(ip="192.0.2.10"))
        assert engine._banned(key, time.monotonic())
        # ... the next snapshot (periodic, or at any firewall start) releases it.
        link.apply_snapshot(_wire(durable.op_lists_snapshot(SnapshotRequest())))
        assert not engine._banned(key, time.monotonic())
        other = engine._key_of_text("192.0.2.11")
        assert other is not None and engine._banned(other, time.monotonic())
        # A live ban the worker saw stays tracked for the next diff.
        link.observe(ListChange(list="blacklist", op="add", ip="192.0.2.12"))
        assert "192.0.2.12" in link.known["blacklist"]
    finally:
        link.close()
        ctx.term()


def test_e_drift_check_repairs_and_counts(rig: Rig) -> None:
    fw, durable = rig.fw, rig.durable
    fw.handle_batch([decision("r1", "192.0.2.20"), decision("r2", "192.0.2.21")])
    run_in(rig.ns, [REAL_IPSET, "del", SET, "192.0.2.20"], check=True)  # lost behind our back
    run_in(rig.ns, [REAL_IPSET, "add", SET, "192.0.2.99"], check=True)  # foreign
    result = durable.drift_check()
    assert (result.added, result.removed_foreign) == (1, 1)
    assert set(rig.members()) == {"192.0.2.20", "192.0.2.21"}
    stats = fw.control.op_stats(Empty())
    assert (stats.drift_checks, stats.drift_repaired, stats.last_drift) == (1, 2, 2)
    durable.drift_check()
    assert fw.control.op_stats(Empty()).last_drift == 0


def test_ledger_module_does_not_import_the_process_loop() -> None:
    import fsguard_firewall.ledger as ledger_mod

    source = Path(ledger_mod.__file__).read_text()
    assert "zmq" not in source and "process" not in source.split('"""', 2)[2].split("class")[0]
    assert BanLedger.__module__ == "fsguard_firewall.ledger"
