"""`fsguard demo` end to end: exit 0, bans narrated, nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns_helpers import requires_netns

FSGUARD = str(Path(sys.executable).parent / "fsguard")
EXPECTED_BANS = {
    "203.0.113.1": "failed_auth",  # capture phase a
    "203.0.113.8": "toll_fraud",  # capture phase h1
    "203.0.113.9": "scanner_user_agent",  # h2
    "203.0.113.10": "scanner_user_agent",  # f1 svwar
    "203.0.113.12": "scanner_user_agent",  # f2 svwar
    "203.0.113.13": "scanner_user_agent",  # f3 svcrack
    "203.0.113.101": "registration_rate",  # generated flood
    "203.0.113.102": "toll_fraud",  # generated probe
}
LEFT_ALONE = ("203.0.113.121", "203.0.113.122", "203.0.113.3", "203.0.113.7", "203.0.113.16")


def _netns() -> set[str]:
    if shutil.which("ip") is None:
        return set()
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def _run_demo(*extra: str) -> str:
    proc = subprocess.run([FSGUARD, "demo", *extra], capture_output=True, text=True,
                          timeout=60)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for ip, rule in EXPECTED_BANS.items():
        assert re.search(rf"BANNED {re.escape(ip)}  rule {rule}\b", out), ip
    for ip in LEFT_ALONE:
        assert re.search(rf"{re.escape(ip)}\s+left alone\s+ok", out), ip
    assert "UNEXPECTED" not in out
    assert "nothing left behind" in out
    # nothing left behind (other demos may run in parallel: check this one's own names)
    tmp = re.search(r"temporary directory (\S+)", out)
    assert tmp is not None and Path(tmp.group(1)).name.startswith("fsguard-demo-")
    assert not Path(tmp.group(1)).exists(), "temporary directory left behind"
    assert _processes_mentioning(tmp.group(1)) == [], "processes left behind"
    if "--dry-run" not in extra:
        ns = re.search(r"namespace (fsgdemo-\d+-\d+)", out)
        assert ns is not None
        assert ns.group(1) not in _netns(), "namespace left behind"
    return out


@requires_netns
def test_demo_enforces_in_a_private_namespace() -> None:
    out = _run_demo()
    assert "enforced for real" in out
    assert out.count("in the kernel set, packets from it are dropped") == len(EXPECTED_BANS)
    assert "NOT in the kernel set" not in out
    if shutil.which("ipset"):
        host_sets = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True)
        assert "fsg-demo" not in host_sets.stdout  # the sets lived in the namespace only


def test_demo_dry_run() -> None:
    out = _run_demo("--dry-run")
    assert "security.dry_run=true" in out
    assert "kernel set" not in out


@pytest.mark.skipif(os.geteuid() != 0, reason="compares with the root behaviour")
def test_demo_help_mentions_the_fallback() -> None:
    proc = subprocess.run([FSGUARD, "demo", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--dry-run" in proc.stdout
