"""The firewall's side of the fleet, for real: the firewall process in a namespace, its
SQLite store, the kernel sets; the control ops driven exactly as the connector drives
them (crowdsec_outbox_due / _settle, crowdsec_apply)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zmq

from shared import addresses
from shared.crowdsec import RemoteDecision
from shared.messages import encode
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from shared.ops.firewall_bans import BanRequest, UnbanRequest
from shared.ops.firewall_state import (
    ApplyRequest,
    OutboxDueRequest,
    OutboxSettleRequest,
    ReconcileRequest,
)
from tests.firewall_helpers import SET, Proc, decision, launch, stop, wait_for, write_config
from tests.netns_helpers import netns, requires_netns, run_in

pytestmark = [pytest.mark.netns, requires_netns]

CROWDSEC = {
    "enabled": True,
    "lapi_url": "http://127.0.0.1:9",  # no connector runs here: the test is the connector
    "machine_id": "node-a",
    "password": "node-a-password",
    "bouncer_api_key": "bouncer-key",
}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Proc, Path, str]]:
    with netns("fwcs") as ns:
        config, runtime = write_config(tmp_path, crowdsec=CROWDSEC, ipv6_ban_prefix=64)
        proc = launch(ns, config, runtime)
        try:
            yield proc, config, runtime
        finally:
            stop(proc.popen)


def remote(id: int, value: str, seconds: float = 600, origin: str = "cscli") -> RemoteDecision:
    return RemoteDecision(id, value, seconds, origin, "crowdsecurity/ssh-bf")


def outbox(proc: Proc) -> list[tuple[int, str, str, str]]:
    return proc.call(fwo.CROWDSEC_OUTBOX_DUE, OutboxDueRequest(limit=100)).items


def test_local_bans_queue_alerts_in_their_transaction_and_unbans_queue_deletes(
    node: tuple[Proc, Path, str],
) -> None:
    proc, config, runtime = node
    push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(addresses.firewall_decisions(runtime))
    try:
        push.send(encode(decision("w0-1-1", "203.0.113.10", duration=600)))
        push.send(encode(decision("w0-1-2", "2001:db8:7::1", duration=600)))
    finally:
        push.close()
    wait_for(lambda: len(outbox(proc)) == 2)
    proc.call(fwo.BAN, BanRequest(ip="203.0.113.11", reason="operator says so", duration=120))
    items = outbox(proc)
    assert [i[1] for i in items] == ["alert", "alert", "alert"]
    alerts = {i[2]: json.loads(i[3]) for i in items}
    assert alerts["203.0.113.10"]["scenario"] == "fsguard/failed_auth"
    assert alerts["203.0.113.10"]["events_count"] == 5
    assert alerts["203.0.113.10"]["decisions"][0]["duration"] == "600s"
    v6 = next(k for k in alerts if ":" in k)
    assert "/" in v6 and alerts[v6]["decisions"][0]["scope"] == "Range"  # ipv6_ban_prefix 64
    assert alerts["203.0.113.11"]["scenario"] == "fsguard/manual"
    assert alerts["203.0.113.11"]["message"] == "operator says so"

    # kill -9: the queued alerts were committed with their bans
    proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait(5)
    proc = launch(proc.ns, config, runtime)
    try:
        assert [i[0] for i in outbox(proc)] == [i[0] for i in items]
        settled = OutboxSettleRequest(sent=[i[0] for i in items])
        sent = proc.call(fwo.CROWDSEC_OUTBOX_SETTLE, settled)
        assert sent.depth == 0
        proc.call(fwo.UNBAN, UnbanRequest(ip="203.0.113.11"))  # pushed → the LAPI must drop it too
        assert [(i[1], i[2]) for i in outbox(proc)] == [("delete", "203.0.113.11")]
        stats = proc.call(fwo.STATS, Empty())
        assert stats.crowdsec_push_queue_depth == 1 and stats.crowdsec_pushed == 3
        failed = outbox(proc)[0][0]
        settle = OutboxSettleRequest(failed=[(failed, "LAPI down")])
        proc.call(fwo.CROWDSEC_OUTBOX_SETTLE, settle)
        assert len(outbox(proc)) == 1 and proc.call(fwo.STATS, Empty()).crowdsec_push_failures == 1
    finally:
        stop(proc.popen)


def test_remote_decisions_are_applied_stored_with_origin_and_lifted(
    node: tuple[Proc, Path, str],
) -> None:
    proc, config, runtime = node
    proc.call(fwo.BAN, BanRequest(ip="203.0.113.60", reason="local", duration=60))
    proc.call(fwo.CROWDSEC_OUTBOX_SETTLE, OutboxSettleRequest(sent=[i[0] for i in outbox(proc)]))
    new = [
        remote(1, "203.0.113.50"),
        remote(2, "2001:db8:5::/64", 300),
        remote(3, "10.1.2.3"),  # trusted network
        remote(4, "203.0.113.60", 900, origin="crowdsec"),  # also banned locally
        remote(5, "::ffff:203.0.113.51"),  # mapped: the IPv4 address
        remote(6, "203.0.113.0/24"),  # IPv4 prefixes are never banned here
        remote(7, "169.254.1.1"),  # protected (link-local), whatever the LAPI says
    ]
    result = proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(new=new, deleted=[], startup=True))
    assert (result.applied, result.refused, result.invalid) == (4, 2, 1)
    members = proc.members()
    assert {"203.0.113.50", "203.0.113.51", "203.0.113.60", "2001:db8:5::/64"} <= set(members)
    assert "10.1.2.3" not in members
    bl = proc.call(fwo.BLACKLIST, Empty())
    assert bl["203.0.113.50"].origin == "crowdsec"
    assert bl["203.0.113.60"].origin == "local"  # the node's own ban: no origin (Go shape)
    assert "origin" not in msgspec.to_builtins(bl["203.0.113.60"])
    assert outbox(proc) == []  # a ban from the LAPI is never pushed back

    again = proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(new=new, deleted=[], startup=False))
    assert again.applied == 0  # idempotent

    # deleted on the LAPI: only bans that exist because of it are lifted
    gone = [remote(1, "203.0.113.50", -1.5), remote(4, "203.0.113.60", -2)]
    result = proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(new=[], deleted=gone, startup=False))
    assert result.removed == 1
    members = proc.members()
    assert "203.0.113.50" not in members and "203.0.113.60" in members
    assert "203.0.113.50" not in proc.call(fwo.BLACKLIST, Empty())

    # restart: remote bans survive with their origin; a startup stream that no longer
    # lists a decision lifts it
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(5) == 0
    proc = launch(proc.ns, config, runtime)
    try:
        assert proc.call(fwo.BLACKLIST, Empty())["203.0.113.51"].origin == "crowdsec"
        assert "203.0.113.51" in proc.members()
        keep = [remote(2, "2001:db8:5::/64", 250)]
        result = proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(new=keep, deleted=[], startup=True))
        assert result.removed == 1
        assert "203.0.113.51" not in proc.members() and "2001:db8:5::/64" in proc.members()
        stats = proc.call(fwo.STATS, Empty())
        lag = stats.crowdsec_sync_lag
        assert stats.crowdsec_remote_decisions == 1 and lag is not None and lag < 60
    finally:
        stop(proc.popen)


def test_ten_thousand_decisions_in_one_batch(node: tuple[Proc, Path, str]) -> None:
    proc, _, _ = node
    new = [remote(100 + i, f"198.18.{i // 250}.{i % 250 + 1}") for i in range(10_000)]
    started = time.perf_counter()
    result = proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(new=new, deleted=[], startup=True))
    elapsed = time.perf_counter() - started
    assert result.applied == 10_000
    assert len(proc.members()) == 10_000
    print(f"\n10,000 decisions applied in one batch: {elapsed:.3f}s")  # figure, not a gate
    deleted = [remote(100 + i, f"198.18.{i // 250}.{i % 250 + 1}", -1) for i in range(10_000)]
    started = time.perf_counter()
    result = proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(new=[], deleted=deleted, startup=False))
    print(f"10,000 deletions applied in one batch: {time.perf_counter() - started:.3f}s")
    assert result.removed == 10_000 and proc.members() == {}


def test_startup_stream_in_chunks_and_reconcile_keep_remote_bans(
    node: tuple[Proc, Path, str],
) -> None:
    proc, _, _ = node
    proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(new=[remote(70, "203.0.113.70")], deleted=[]))
    # a startup answer in two chunks: 71 then 72, the last one listing every id
    proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(new=[remote(71, "203.0.113.71")], deleted=[]))
    last = proc.call(fwo.CROWDSEC_APPLY, ApplyRequest(
        new=[remote(72, "203.0.113.72")], startup=True, present=[71, 72]
    ))  # fmt: skip
    assert last.removed == 1  # 70 was not in the startup answer
    members = proc.members()
    assert "203.0.113.70" not in members
    assert {"203.0.113.71", "203.0.113.72"} <= set(members)
    # reconcile re-adds a remote ban the kernel lost (it is in the store with its origin)
    run_in(proc.ns, ["ipset", "del", SET, "203.0.113.71"], check=True)
    proc.call(fwo.RECONCILE, ReconcileRequest())
    assert "203.0.113.71" in proc.members()
    assert proc.call(fwo.BLACKLIST, Empty())["203.0.113.71"].origin == "crowdsec"
    bad = proc.raw("crowdsec_apply", {"new": [["x"]], "deleted": []})
    assert (bad.ok, bad.status) == (False, 400)
