"""nftables text rendering and parsing, and the backend config keys (no kernel needed)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from fsguard_firewall import nft_ruleset as nr
from fsguard_firewall.elements import to_element
from shared.config import ConfigError, config_from_dict


def test_table_spec_flags_follow_ipv6_prefix() -> None:
    exact = nr.table_spec("fsguard", "bans", 128)
    assert (exact.v4.name, exact.v6.name) == ("bans", "bans-v6")
    assert exact.v6.flags == ("timeout",) and exact.v6_mask is None
    assert "ip6 saddr @bans-v6 counter drop" in "\n".join(exact.render())
    prefixed = nr.table_spec("fsguard", "bans", 64)
    assert prefixed.v6.flags == ("timeout",)  # a hash set looked up masked, no interval
    text = "\n".join(prefixed.render())
    assert "set bans-v6 { type ipv6_addr; flags timeout; size 1000000; }" in text
    assert "type filter hook input priority -10; policy accept;" in text
    assert "ip saddr @bans counter drop" in text
    assert "ip6 saddr & ffff:ffff:ffff:ffff:: @bans-v6 counter drop" in text
    assert "flush" not in text
    assert nr.table_spec("t", "b", 56).v6_mask == "ffff:ffff:ffff:ff00::"


@pytest.mark.parametrize("name", ["", "a b", "x;flush ruleset", "t}", "a" * 29, "1fsg", "-x"])
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(ValueError):
        nr.table_spec(name, "bans", 128)
    with pytest.raises(ValueError):
        nr.table_spec("fsguard", name, 128)


def test_element_rendering_only_from_ipaddress_objects() -> None:
    assert nr.render_element(ipaddress.ip_address("192.0.2.1"), 60) == "192.0.2.1 timeout 60s"
    assert nr.render_element(ipaddress.IPv6Network("2001:db8:0:1::/64"), 0) == "2001:db8:0:1::"
    with pytest.raises(TypeError):
        nr.render_element("192.0.2.1 }\nflush ruleset", 60)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        nr.render_element(ipaddress.ip_network("10.0.0.0/8"), 60)  # type: ignore[arg-type]


def test_to_element_aggregates_and_refuses_wide_networks() -> None:
    assert str(to_element(ipaddress.ip_address("2001:db8:1:2::9"), 64)) == "2001:db8:1:2::/64"
    assert str(to_element(ipaddress.ip_address("::ffff:192.0.2.7"), 64)) == "192.0.2.7"
    with pytest.raises(ValueError):
        to_element(ipaddress.ip_network("10.0.0.0/8"), 128)
    with pytest.raises(ValueError):
        to_element(ipaddress.ip_network("2001:db8::/48"), 64)


def test_batch_maps_every_line_to_its_elements() -> None:
    batch = nr.Batch()
    batch.block("add", "t", "s", [(0, "192.0.2.1 timeout 5s"), (1, "192.0.2.2 timeout 5s")])
    batch.block("delete", "t", "s6", [(2, "2001:db8::1")])
    assert batch.lines == [
        "add element inet t s {",
        "192.0.2.1 timeout 5s,",
        "192.0.2.2 timeout 5s",
        "}",
        "delete element inet t s6 {",
        "2001:db8::1",
        "}",
    ]
    assert batch.owners_of(1) == (0, 1)  # header: the whole block
    assert batch.owners_of(3) == (1,)
    assert batch.owners_of(6) == (2,)
    assert batch.owners_of(99) == ()


def test_parse_errors_reads_line_numbers() -> None:
    stderr = (
        "/dev/stdin:4:1-9: Error: Could not process rule: Too many open files in system\n"
        "192.0.2.5 timeout 60s,\n^^^^^^^^^\n"
        "/dev/stdin:1:22-25: Error: No such file or directory\n"
    )
    assert nr.parse_errors(stderr) == [
        (4, "Could not process rule: Too many open files in system"),
        (1, "No such file or directory"),
    ]
    assert nr.parse_errors("Error: syntax error\n") == []


def test_parse_set_elements_timeouts_prefixes_and_permanent() -> None:
    text = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"set": {"name": "s", "elem": [
            "192.0.2.9",
            {"elem": {"val": "192.0.2.1", "timeout": 60, "expires": 59}},
            {"elem": {"val": {"prefix": {"addr": "2001:db8::", "len": 64}}, "timeout": 9,
                      "expires": 0}},
            {"elem": {"val": {"range": ["192.0.2.10", "192.0.2.20"]}}},
        ]}},
    ]})  # fmt: skip
    assert nr.parse_set_elements(text) == [
        ("192.0.2.9", 0),
        ("192.0.2.1", 59),
        ("2001:db8::/64", 1),  # about to expire: never reported as permanent
        ("192.0.2.10-192.0.2.20", 0),
    ]


def test_differences_name_what_changed() -> None:
    spec = nr.table_spec("fsguard", "bans", 64)
    good = json.dumps({"nftables": [
        {"set": {"name": "bans", "type": "ipv4_addr", "flags": ["timeout"]}},
        {"set": {"name": "bans-v6", "type": "ipv6_addr", "flags": ["timeout"]}},
        {"chain": {"name": "input", "type": "filter", "hook": "input", "prio": -10,
                   "policy": "accept"}},
        {"rule": {"chain": "input", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": "@bans"}},
            {"counter": {"packets": 7, "bytes": 420}}, {"drop": None}]}},
        {"rule": {"chain": "input", "expr": [
            {"match": {"op": "==", "left": {"&": [
                {"payload": {"protocol": "ip6", "field": "saddr"}}, "ffff:ffff:ffff:ffff::"]},
                       "right": "@bans-v6"}},
            {"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]}},
    ]})  # fmt: skip
    assert nr.differences(spec, nr.parse_table(good)) == []
    exact = nr.table_spec("fsguard", "bans", 128)
    state = nr.parse_table(good)
    assert nr.rule_prefix(state, "bans-v6") == 64 and nr.rule_prefix(state, "bans") == 128
    assert nr.changed_sets(spec, state) == []
    diffs = nr.differences(exact, state)
    assert len(diffs) == 1 and "ffff:ffff:ffff:ffff::" in diffs[0]  # the v6 rule's mask
    assert nr.changed_sets(exact, state) == ["bans-v6"]


def test_config_backend_keys_defaults_env_and_errors() -> None:
    c = config_from_dict({})
    assert (c.security.firewall_backend, c.security.nftables_table) == ("ipset", "fsguard")
    c = config_from_dict({}, env={"SECURITY_FIREWALL_BACKEND": "nftables"})
    assert c.security.firewall_backend == "nftables"
    c = config_from_dict({"security": {"firewall_backend": "nftables", "nftables_table": "fw2"}})
    assert c.security.nftables_table == "fw2"
    with pytest.raises(ConfigError, match=r"security\.firewall_backend"):
        config_from_dict({"security": {"firewall_backend": "pf"}})
    with pytest.raises(ConfigError, match="SECURITY_FIREWALL_BACKEND"):
        config_from_dict({}, env={"SECURITY_FIREWALL_BACKEND": "iptables"})
    with pytest.raises(ConfigError, match=r"security\.nftables_table"):
        config_from_dict({"security": {"nftables_table": "a b"}})
    # ipset accepts a leading digit, nft does not: checked when nftables is the backend.
    assert config_from_dict({"security": {"ipset_name": "1bans"}}).security.ipset_name == "1bans"
    with pytest.raises(ConfigError, match=r"security\.ipset_name"):
        config_from_dict({"security": {"ipset_name": "1bans", "firewall_backend": "nftables"}})


def test_status_line_names_the_backend_and_its_ruleset() -> None:
    from fsguard_cli.status_firewall import firewall_line

    nft = {"backend": "nftables", "chain": "input", "set": "bans", "kernelEntries": 3,
           "ruleset": {"table": "inet fsguard", "present": True,
                       "chain": {"hook": "input", "prio": -10, "policy": "accept"}}}  # fmt: skip
    assert firewall_line(nft) == (
        "  firewall   nftables: table inet fsguard, chain input (hook input, priority -10), "
        "3 kernel entries"
    )
    nft["ruleset"] = {"table": "inet fsguard", "present": False}
    assert "table inet fsguard MISSING" in firewall_line(nft)
    ipset = {"backend": "ipset", "chain": "INPUT", "set": "bans", "kernelEntries": 0,
             "ruleset": None}  # fmt: skip
    assert firewall_line(ipset) == "  firewall   ipset: ipset bans, chain INPUT, 0 kernel entries"
