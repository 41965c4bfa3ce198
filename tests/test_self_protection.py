"""fsguard never cuts off its own host (issue 11 §2).

The pure classification (shared.protected), then the real firewall process in a network
namespace: rule decisions and manual bans of special addresses, of the ESL peer, of the
namespace's own addresses and of the API client never reach the kernel; untrusted
patterns that would ban everyone are refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from shared import addresses
from shared.config import ConfigError, load_config
from shared.messages import encode
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from shared.ops.firewall_bans import BanRequest
from shared.ops.firewall_lists import PatternAddRequest
from shared.protected import never_ban_reason, pattern_problem
from tests.firewall_helpers import Proc, decision, running_firewall, wait_for, write_config
from tests.netns_helpers import requires_netns, run_in

SPECIAL = [
    "::1", "fe80::1", "ff02::1", "224.0.0.1", "255.255.255.255", "0.0.0.0", "::",
    "169.254.10.20", "127.0.0.1", "::ffff:127.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 form of 127.0.0.1
    "2002:7f00:1::1",  # 6to4 form of 127.0.0.1
    "64:ff9b::e000:1",  # NAT64 form of 224.0.0.1
]  # fmt: skip
ORDINARY = ["203.0.113.9", "2001:db8::9", "64:ff9b::cb00:7109", "2002:cb00:7109::1", "8.8.8.8"]


@pytest.mark.parametrize("addr", SPECIAL)
def test_special_addresses_are_classified(addr: str) -> None:
    assert never_ban_reason(addr) is not None


@pytest.mark.parametrize("addr", ORDINARY)
def test_ordinary_addresses_are_not(addr: str) -> None:
    assert never_ban_reason(addr) is None


def test_prefixes_covering_special_addresses() -> None:
    assert never_ban_reason("::/64") is not None
    assert never_ban_reason("fe80::/64") == "link-local"
    assert never_ban_reason("2001:db8::/64") is None


def test_untrusted_patterns_that_ban_everyone_or_trusted_are_refused() -> None:
    trusted = ["127.0.0.0/8", "10.0.0.0/8"]
    assert pattern_problem("0.0.0.0/0", trusted, force=True) is not None
    assert pattern_problem("::/0", trusted, force=True) is not None
    assert pattern_problem("10.1.0.0/16", trusted, force=True) is not None  # a trusted net
    assert pattern_problem("0.0.0.0/1", trusted) is not None  # covers 10/8 too
    assert "force" in (pattern_problem("64.0.0.0/4", trusted) or "")
    assert pattern_problem("64.0.0.0/4", trusted, force=True) is None
    assert pattern_problem("203.0.113.0/24", trusted) is None
    assert pattern_problem("*.example.com", trusted) is None


def test_default_trusted_has_ipv6_loopback_and_config_refuses_ban_everyone(
    tmp_path: Path,
) -> None:
    from shared.config import Config

    assert "::1/128" in Config().security.trusted_networks
    path = tmp_path / "c.json"
    path.write_text('{"security": {"untrusted_networks": ["0.0.0.0/0"]}}')
    with pytest.raises(ConfigError, match="untrusted_networks"):
        load_config(str(path))


ESL_PEER = "192.0.2.200"
OWN = "198.51.100.77"


@pytest.fixture
def guarded(ns: str, tmp_path: Path) -> Iterator[Proc]:
    run_in(ns, ["ip", "addr", "add", f"{OWN}/32", "dev", "lo"], check=True)
    config, runtime = write_config(tmp_path, esl_host=ESL_PEER, trusted_networks=[])
    with running_firewall(ns, config, runtime) as proc:
        yield proc


@requires_netns
def test_rule_decisions_never_ban_protected_addresses(guarded: Proc) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(addresses.firewall_decisions(guarded.runtime))
    try:
        targets = [*SPECIAL, ESL_PEER, OWN, "203.0.113.50"]
        for i, ip in enumerate(targets):
            push.send(encode(decision(f"p{i}", ip)))
        wait_for(lambda: guarded.call(fwo.STATS, Empty()).decisions_received >= len(targets))
    finally:
        push.close(0)
    assert set(guarded.members()) == {"203.0.113.50"}
    assert guarded.call(fwo.STATS, Empty()).refused_protected == len(targets) - 1


@requires_netns
def test_manual_bans_refuse_protected_peer_own_and_client(guarded: Proc) -> None:
    for ip in ["::1", "ff02::1", "64:ff9b::7f00:1", ESL_PEER, OWN]:
        reply = guarded.refusal(fwo.BAN, BanRequest(ip=ip))
        assert reply.status == 400, (ip, reply)
    reply = guarded.refusal(fwo.BAN, BanRequest(ip="203.0.113.60", client="203.0.113.60"))
    assert reply.status == 400 and "API client" in str(reply)
    guarded.call(fwo.BAN, BanRequest(ip="203.0.113.61", client="203.0.113.60"))
    assert set(guarded.members()) == {"203.0.113.61"}


@requires_netns
def test_untrusted_patterns_refused_at_the_firewall(guarded: Proc) -> None:
    for pattern in ["0.0.0.0/0", "::/0"]:
        reply = guarded.refusal(fwo.UNTRUSTED_ADD, PatternAddRequest(pattern=pattern, force=True))
        assert reply.status == 400
    reply = guarded.refusal(fwo.UNTRUSTED_ADD, PatternAddRequest(pattern="64.0.0.0/4"))
    assert "force" in str(reply)
    guarded.call(fwo.UNTRUSTED_ADD, PatternAddRequest(pattern="64.0.0.0/4", force=True))


@requires_netns
def test_stored_protected_ban_is_dropped_at_start(ns: str, tmp_path: Path) -> None:
    """An old row for a now-protected address (e.g. ::1 banned by an older version)
    is dropped by the start-up reconcile, never re-added to the kernel."""
    from fsguard_firewall.store import BanRecord, Store

    config, runtime = write_config(tmp_path, trusted_networks=[])
    (tmp_path / "state").mkdir()
    with Store(str(tmp_path / "state" / "fsguard.db")) as store:
        now = time.time()
        store.add_bans([
            BanRecord(key="::1", rule="manual", reason="old", created=now, expires=None,
                      source="manual"),
            BanRecord(key="203.0.113.70", rule="manual", reason="x", created=now,
                      expires=None, source="manual"),
        ])  # fmt: skip
    with running_firewall(ns, config, runtime) as proc:  # answers ping after the reconcile
        assert set(proc.members()) == {"203.0.113.70"}
        assert set(proc.call(fwo.BLACKLIST, Empty()).keys()) == {"203.0.113.70"}
