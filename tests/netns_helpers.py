"""Network-namespace helpers for every kernel test in the project.

The helpers live in `fsguard_cli.netns` (the demo uses them too); this module
re-exports them and adds the pytest skip marker.

    pytestmark = requires_netns
    with netns("fw") as ns:
        run_in(ns, ["ipset", "list"])
"""

from __future__ import annotations

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
    "netns",
    "netns_unavailable_reason",
    "requires_netns",
    "run_in",
    "socket_in",
    "udp_reaches",
    "veth_pair",
]

requires_netns = pytest.mark.skipif(
    netns_unavailable_reason() is not None,
    reason=netns_unavailable_reason() or "netns available",
)
