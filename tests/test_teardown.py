"""`fsguard teardown --backend ...` removes one backend's objects and nothing else."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fsguard_firewall.kernel import KernelFirewall
from fsguard_firewall.nft_backend import NftBackend
from tests.netns_helpers import netns, requires_netns, run_in
from tests.system_helpers import FSGUARD

pytestmark = [pytest.mark.netns, requires_netns]

SET = "fsg-td"


def fsguard(ns: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_in(
        ns,
        [FSGUARD, *args, "--config", str(config)],
        timeout=60,
    )


def test_teardown_each_backend_removes_only_its_own(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "security": {"ipset_name": SET, "nftables_table": "fsgtd",
                     "firewall_backend": "nftables"},
        "paths": {"runtime_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "st")},
    }))  # fmt: skip
    with netns("td") as ns:
        prefix = ["ip", "netns", "exec", ns]
        KernelFirewall(SET, "INPUT", default_timeout=60, command_prefix=prefix).ensure_setup()
        NftBackend("fsgtd", SET, default_timeout=60, command_prefix=prefix).ensure()
        run_in(ns, ["ipset", "create", "other", "hash:ip"], check=True)
        run_in(ns, ["iptables", "-A", "INPUT", "-m", "set", "--match-set", "other", "src",
                    "-j", "DROP"], check=True)  # fmt: skip
        run_in(ns, ["iptables", "-A", "INPUT", "-s", "192.0.2.1", "-j", "ACCEPT"], check=True)
        run_in(ns, ["nft", "add", "table", "inet", "mine"], check=True)

        done = fsguard(ns, config, "teardown", "--backend", "ipset", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert sorted(report["removed"]) == sorted([
            f"iptables -A INPUT -m set --match-set {SET} src -j DROP",
            f"ip6tables -A INPUT -m set --match-set {SET}-v6 src -j DROP",
            f"ipset {SET}", f"ipset {SET}-v6",
        ])  # fmt: skip
        assert run_in(ns, ["ipset", "list", "-n"], check=True).stdout.split() == ["other"]
        rules = run_in(ns, ["iptables", "-S", "INPUT"], check=True).stdout
        assert "--match-set other src -j DROP" in rules and "192.0.2.1/32 -j ACCEPT" in rules
        assert f"--match-set {SET}" not in rules
        assert "inet fsgtd" in run_in(ns, ["nft", "list", "tables"], check=True).stdout

        done = fsguard(ns, config, "teardown", "--backend", "nftables")
        assert done.returncode == 0, done.stderr
        assert "removed  nft table inet fsgtd" in done.stdout
        tables = run_in(ns, ["nft", "list", "tables"], check=True).stdout
        assert "inet fsgtd" not in tables and "table inet mine" in tables

        again = fsguard(ns, config, "teardown", "--backend", "ipset")
        assert again.returncode == 0 and "removed" not in again.stdout
        assert f"absent   ipset {SET}" in again.stdout

        # Without --backend (uninstall): both backends' objects go.
        KernelFirewall(SET, "INPUT", default_timeout=60, command_prefix=prefix).ensure_setup()
        NftBackend("fsgtd", SET, default_timeout=60, command_prefix=prefix).ensure()
        both = fsguard(ns, config, "teardown")
        assert both.returncode == 0, both.stderr
        assert f"removed  ipset {SET}-v6" in both.stdout
        assert "removed  nft table inet fsgtd" in both.stdout
        assert run_in(ns, ["ipset", "list", "-n"], check=True).stdout.split() == ["other"]
        assert "inet fsgtd" not in run_in(ns, ["nft", "list", "tables"], check=True).stdout
