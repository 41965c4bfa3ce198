"""Network-namespace helpers for every kernel test in the project.

The helpers live in `fsguard_cli.netns` (the demo uses them too); this module
re-exports them and adds the pytest skip markers. A test that takes the `ns` fixture
(tests/conftest.py) runs in a fresh namespace of its own.

    pytestmark = requires_netns
    with netns("fw") as ns:
        run_in(ns, ["ipset", "list"])
"""

from __future__ import annotations

import shutil

import pytest

from fsguard_cli.netns import (
    CLONE_NEWNET,
    netns,
    netns_unavailable_reason,
    run_in,
    socket_in,
    udp_reaches,
    veth_pair,
)

__all__ = [
    "CLONE_NEWNET",
    "REAL_NFT",
    "netns",
    "netns_unavailable_reason",
    "requires_netns",
    "requires_nft",
    "run_in",
    "socket_in",
    "udp_reaches",
    "veth_pair",
]

requires_netns = pytest.mark.skipif(
    netns_unavailable_reason() is not None,
    reason=netns_unavailable_reason() or "netns available",
)
requires_nft = pytest.mark.skipif(
    shutil.which("nft") is None, reason="nft (nftables) not installed"
)
# The real binary, for the tests that put a wrapper script in front of it.
REAL_NFT = shutil.which("nft") or "/usr/sbin/nft"
