"""The firewall's typed control plane (issue 17): the real server's OpTable binds exactly
the registry's ops, the audit wrapper records what the client sent, and the real process
refuses a request with a missing or wrongly typed field with a 400 naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fsguard_firewall.durable import Durable
from fsguard_firewall.firewall import Firewall
from fsguard_firewall.fleet import FleetState
from fsguard_firewall.process import control_table, make_kernel
from shared import addresses
from shared.audit import AuditLog, read_records
from shared.config import Config, PathsConfig, SecurityConfig
from shared.control import ControlError, call, dispatch
from shared.messages import ControlReply, ControlRequest, decode, encode
from shared.ops import firewall as fw_ops
from shared.ops.base import Empty, OpTable
from shared.ops.firewall import FIREWALL
from shared.ops.firewall_bans import BanRequest, FirewallStats, IpRequest, UnbanRequest
from shared.ops.firewall_lists import PatternAddRequest, WhitelistAddRequest
from tests.firewall_helpers import Proc
from tests.netns_helpers import requires_netns


@dataclass
class Rig:
    table: OpTable
    audit: AuditLog
    state_dir: Path


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """The firewall's parts as process.main wires them (kernel in dry-run, real store)."""
    config = Config(
        security=SecurityConfig(dry_run=True, trusted_networks=["10.0.0.0/8"]),
        paths=PathsConfig(runtime_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state")),
    )
    durable = Durable.open(config)
    audit = AuditLog(config, "firewall")
    fw = Firewall(config, make_kernel(config), store=durable.bans, audit=audit)
    durable.attach(fw)
    fleet = FleetState(config, lambda: durable.store)
    fleet.attach(fw)
    try:
        yield Rig(control_table(fw, durable, fleet), audit, tmp_path / "state")
    finally:
        audit.close()
        durable.close()


def _send(table: OpTable, op: str, args: dict[str, Any]) -> ControlReply:
    reply = decode(dispatch(table, encode(ControlRequest(op=op, args=args))))
    assert isinstance(reply, ControlReply)
    return reply


def test_real_table_binds_every_registered_op_and_nothing_else(rig: Rig) -> None:
    assert rig.table.missing() == []
    bound = set(rig.table.handlers) | set(rig.table.async_handlers)
    assert bound == set(FIREWALL.names())
    # stats carries the durable state's and the fleet's counters (filled by the parts)
    stats = rig.table.bound(fw_ops.STATS)(Empty())
    assert isinstance(stats, FirewallStats)
    assert stats.crowdsec_active_by_origin == {"local": 0, "crowdsec": 0}
    assert stats.last_reconcile is None and stats.store_degraded == 0


def test_audited_ops_record_what_the_client_sent(rig: Rig) -> None:
    """The API's arguments, as before the typing: unsent optional fields stay out."""
    ban = _send(rig.table, "ban", {"ip": "203.0.113.5", "reason": "manual", "permanent": False,
                                   "duration": 60, "client": "192.0.2.1"})  # fmt: skip
    assert ban.ok, ban.error
    refused = _send(rig.table, "ban", {"ip": "10.1.2.3", "reason": "", "permanent": True})
    assert (refused.ok, refused.status) == (False, 400)
    assert _send(rig.table, "unban", {"ip": "203.0.113.5"}).ok
    assert _send(rig.table, "whitelist_remove", {"ip": "192.0.2.9", "learned": True}).ok
    added = _send(rig.table, "untrusted_add", {"pattern": "bad.example", "force": False})
    assert added.ok
    assert rig.audit.flush(10)
    records = [r for r in read_records(rig.state_dir / "audit.log") if r["role"] == "firewall"]
    got = [(r["action"], r["target"], r["outcome"].split(":")[0], r["details"]) for r in records]
    assert got == [
        ("ban", "203.0.113.5", "ok",
         {"reason": "manual", "permanent": False, "duration": 60.0, "client": "192.0.2.1"}),
        ("ban", "10.1.2.3", "refused", {"reason": "", "permanent": True}),
        ("unban", "203.0.113.5", "ok", {}),
        ("whitelist_remove", "192.0.2.9", "ok", {"learned": True}),
        ("untrusted_add", "bad.example", "ok", {"pattern": "bad.example", "force": False}),
    ]  # fmt: skip
    assert {r["actor"] for r in records} == {"control"}


def test_typed_handlers_refuse_values_the_struct_cannot(rig: Rig) -> None:
    """Types are the Struct's; values (address, range) stay the handler's checks."""
    ban = rig.table.bound(fw_ops.BAN)
    with pytest.raises(ControlError, match="invalid IP address"):
        ban(BanRequest(ip="not-an-ip"))
    with pytest.raises(ControlError, match="invalid duration"):
        ban(BanRequest(ip="203.0.113.6", duration=-1))
    with pytest.raises(ControlError, match="invalid ttl"):
        rig.table.bound(fw_ops.WHITELIST_ADD)(WhitelistAddRequest(ip="192.0.2.7", ttl=0))
    with pytest.raises(ControlError, match="invalid untrusted pattern"):
        rig.table.bound(fw_ops.UNTRUSTED_ADD)(PatternAddRequest(pattern="a\nb"))
    lookup = rig.table.bound(fw_ops.BLACKLIST_GET)(IpRequest(ip="203.0.113.6"))
    assert (lookup.ip, lookup.blacklisted) == ("203.0.113.6", False)


@pytest.mark.netns
@requires_netns
def test_real_process_refuses_bad_fields_naming_them(fw_proc: Proc) -> None:
    for op, args, named in (
        ("ban", {"reason": "no address"}, "missing required field `ip`"),
        ("ban", {"ip": "203.0.113.9", "duration": "soon"}, "`$.duration`"),
        ("whitelist_add", {"ip": "192.0.2.1", "permanent": "yes"}, "`$.permanent`"),
        ("crowdsec_outbox_due", {"limit": "many"}, "`$.limit`"),
        ("crowdsec_apply", {"new": [["x"]]}, "`$.new[0]"),
        ("lists_snapshot", {"shard": "0"}, "`$.shard`"),
    ):
        reply = fw_proc.raw(op, args)
        assert (reply.ok, reply.status) == (False, 400), (op, reply)
        assert f"bad request: {op}: " in reply.error and named in reply.error, reply.error
    # nothing was applied; the typed client reads typed replies from the same process
    endpoint = addresses.firewall_control(fw_proc.runtime)
    assert call(endpoint, fw_ops.BLACKLIST, Empty(), timeout=5) == {}
    assert call(endpoint, fw_ops.STATS, Empty(), timeout=5).bans_applied == 0
    with pytest.raises(ControlError) as refused:
        call(endpoint, fw_ops.UNBAN, UnbanRequest(ip="203.0.113.9"), timeout=5)
    assert refused.value.status == 404
