"""The reloadable-key list, reload plans, in-place application, and the worker's engine
refresh and network whitelist (no processes: the system tests are test_reload_system.py)."""

from __future__ import annotations

import msgspec
import pytest

from fsguard_workers import reconfigure
from fsguard_workers.netlist import NetworkWhitelist
from shared.config import Config, config_from_dict
from shared.iputil import parse_ip
from shared.messages import ListChange
from shared.ops.base import BadRequest
from shared.ops.reload import Reloaded
from shared.ops.worker import RELOAD as WORKER_RELOAD
from shared.reloadable import (
    RELOADABLE_PREFIXES,
    ReloadOrder,
    apply_in_place,
    changed_keys,
    is_reloadable,
    plan,
)
from tests.engine_harness import Harness
from tests.sofia_events import failure


def _leaf_keys() -> list[str]:
    out: list[str] = []

    def walk(value: object, prefix: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        else:
            out.append(prefix)

    walk(msgspec.to_builtins(Config()), "")
    return out


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("security.max_failed_attempts", True),
        ("security.rate_limit.call_rate_limit", True),
        ("security.trusted_networks", True),
        ("security.trusted_networks[3]", True),
        ("security.chandaemon.allowed_api_ips", True),
        ("security.recidive.factor", True),
        ("logging.level", True),
        ("logging.format", False),
        ("server.port", False),
        ("security.esl_port", False),
        ("security.esl_password", False),
        ("paths.state_dir", False),
        ("workers.count", False),
        ("security.ipset_name", False),
        ("security.max_failed_attempts_extra", False),  # a prefix of a leaf is not a match
    ],
)
def test_is_reloadable(key: str, expected: bool) -> None:
    assert is_reloadable(key) is expected


def test_every_entry_names_a_schema_key_or_section() -> None:
    leaves = _leaf_keys()
    for entry in RELOADABLE_PREFIXES:
        assert any(k == entry or k.startswith(entry) for k in leaves), entry


def test_plan_splits_reloadable_and_restart_keys() -> None:
    old = Config()
    new = config_from_dict({"server": {"port": 9000}, "workers": {"count": 3},
                            "security": {"max_failed_attempts": 3,
                                         "rate_limit": {"enabled": False}}})  # fmt: skip
    steps = plan(old, new)
    assert steps.apply == ["security.max_failed_attempts", "security.rate_limit.enabled"]
    assert steps.restart == ["server.port", "workers.count"]
    assert changed_keys(old, old) == []


def test_apply_in_place_keeps_the_objects_and_skips_restart_keys() -> None:
    cur = Config()
    sec, rl = cur.security, cur.security.rate_limit
    new = config_from_dict({"server": {"port": 9000},
                            "security": {"rate_limit": {"call_rate_limit": 7}}})  # fmt: skip
    order = ReloadOrder(config=new, keys=["security.rate_limit.call_rate_limit", "server.port"])
    again = WORKER_RELOAD.decode_request(msgspec.to_builtins(order))  # as it travels
    assert apply_in_place(cur, again) == ["security.rate_limit.call_rate_limit"]
    assert cur.security is sec and cur.security.rate_limit is rl and rl.call_rate_limit == 7
    assert cur.server.port == 8088
    with pytest.raises(BadRequest, match=r"reload: .*`\$.config.server.port`"):
        WORKER_RELOAD.decode_request({"config": {"server": {"port": "x"}}, "keys": []})


def _order(cur: Config, **security: object) -> ReloadOrder:
    """The order as a worker's control socket rebuilds it from the wire."""
    raw = msgspec.to_builtins(cur)
    raw["security"].update(security)
    new = msgspec.convert(raw, Config)
    wire = msgspec.to_builtins(ReloadOrder(config=new, keys=plan(cur, new).apply))
    return WORKER_RELOAD.decode_request(wire)


def test_engine_keeps_windows_and_takes_new_threshold() -> None:
    h = Harness()
    ip = "203.0.113.5"
    for _ in range(3):
        assert h.feed(failure(ip), 1) == []
    reconfigure.apply(h.config, h.engine, _order(h.config, max_failed_attempts=4))
    assert h.feed(failure(ip), 1)[0].ip == ip  # the 4th: 3 counted before the reload


def test_engine_trusted_networks_reload_clears_the_source_memo() -> None:
    h = Harness()
    ip = "203.0.113.6"
    h.feed(failure(ip), 1)  # memoised as untrusted
    nets = [*h.config.security.trusted_networks, "203.0.113.0/24"]
    result = reconfigure.apply(h.config, h.engine, _order(h.config, trusted_networks=nets))
    assert result == Reloaded(applied=["security.trusted_networks"])
    for _ in range(10):
        assert h.feed(failure(ip), 1) == []
    assert h.engine.stats()["trusted_skipped"] == 10


def test_engine_untrusted_patterns_keep_runtime_ones() -> None:
    h = Harness(config_from_dict({"security": {"untrusted_networks": ["old.example"]}}))
    h.engine.on_list_change(ListChange(list="untrusted", op="add", ip="runtime.example"))
    reconfigure.apply(h.config, h.engine, _order(h.config, untrusted_networks=["new.example"]))
    assert h.engine.untrusted_patterns() == ["runtime.example", "new.example"]


def test_network_whitelist_in_the_engine() -> None:
    h = Harness()
    h.engine.on_list_change(ListChange(list="whitelist", op="add", ip="203.0.113.64/26"))
    for _ in range(10):
        assert h.feed(failure("203.0.113.70"), 1) == []
    assert h.engine.stats()["whitelist_network_skipped"] == 10
    h.engine.on_list_change(ListChange(list="whitelist", op="remove", ip="203.0.113.64/26"))
    bans = [b for _ in range(5) for b in h.feed(failure("203.0.113.70"), 1)]
    assert [b.ip for b in bans] == ["203.0.113.70"]


def test_netlist_expiry_and_families() -> None:
    now = [1000.0]
    nets = NetworkWhitelist(lambda: now[0])
    assert not nets.on_change(ListChange(list="whitelist", op="add", ip="192.0.2.1"))
    assert not nets.on_change(ListChange(list="whitelist", op="add", ip="192.0.2.1/32"))
    assert nets.on_change(ListChange(list="whitelist", op="add", ip="2001:db8::/48",
                                     expires=1100.0))  # fmt: skip
    assert nets.skip(parse_ip("2001:db8::9")) and not nets.skip(parse_ip("2001:db9::9"))
    now[0] = 1100.0
    assert not nets.skip(parse_ip("2001:db8::9")) and len(nets) == 0


def test_netlist_several_prefix_lengths_and_removal() -> None:
    nets = NetworkWhitelist(lambda: 1000.0)
    for net in ("198.18.0.0/15", "10.1.0.0/16", "10.1.2.0/24", "2001:db8::/32"):
        nets.on_change(ListChange(list="whitelist", op="add", ip=net))
    inside = ["198.19.255.255", "10.1.200.1", "10.1.2.3", "2001:db8:ffff::1"]
    outside = ["198.20.0.0", "10.2.0.1", "11.1.2.3", "2001:db9::1"]
    assert all(nets.skip(parse_ip(a)) for a in inside)
    assert not any(nets.skip(parse_ip(a)) for a in outside)
    nets.on_change(ListChange(list="whitelist", op="remove", ip="10.1.0.0/16"))
    assert nets.skip(parse_ip("10.1.2.3")) and not nets.skip(parse_ip("10.1.200.1"))
    assert nets.skipped == 5
