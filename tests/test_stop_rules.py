"""Whether a clean stop keeps the kernel sets and DROP rules is the operator's choice
(`security.remove_rules_on_stop`, default false: bans stay enforced across a restart)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.netns_helpers import netns, requires_netns, run_in
from tests.system_helpers import fsguard_config, running_fsguard, wait_for

pytestmark = [requires_netns]

SET = "fsg-stop"


def kernel_objects(ns: str) -> tuple[bool, bool, bool]:
    """(IPv4 set exists, IPv6 set exists, the IPv4 DROP rule is in INPUT)."""
    v4 = run_in(ns, ["ipset", "list", "-n", SET]).returncode == 0
    v6 = run_in(ns, ["ipset", "list", "-n", SET + "-v6"]).returncode == 0
    rule = run_in(ns, ["iptables", "-C", "INPUT", "-m", "set", "--match-set", SET, "src",
                       "-j", "DROP"]).returncode == 0
    return v4, v6, rule


@pytest.mark.parametrize("remove", [False, True], ids=["kept-by-default", "removed-on-request"])
def test_clean_stop_keeps_or_removes_what_fsguard_created(tmp_path: Path, remove: bool) -> None:
    security = {"remove_rules_on_stop": True} if remove else {}
    with netns("fsgstop") as ns:
        # Something of the operator's own, which fsguard must never touch.
        assert run_in(ns, ["ipset", "create", "operator-own", "hash:ip"]).returncode == 0
        assert run_in(ns, ["iptables", "-A", "INPUT", "-s", "192.0.2.99", "-j",
                           "DROP"]).returncode == 0
        with running_fsguard(
            tmp_path,
            lambda port: fsguard_config(tmp_path, port, set_name=SET, api_port=18131,
                                        security=security),
            ns=ns,
        ) as system:
            assert wait_for(lambda: kernel_objects(ns) == (True, True, True), 20)
            system.proc.send_signal(signal.SIGTERM)
            assert system.proc.wait(30) == 0
            # (checked before the test helper's own clean-up flushes the namespace's rules)
            assert kernel_objects(ns) == ((False,) * 3 if remove else (True,) * 3)
            assert run_in(ns, ["ipset", "list", "-n", "operator-own"]).returncode == 0
            assert run_in(ns, ["iptables", "-C", "INPUT", "-s", "192.0.2.99", "-j",
                               "DROP"]).returncode == 0
