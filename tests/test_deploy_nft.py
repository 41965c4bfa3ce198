"""The firewall unit's capabilities are enough for the nftables backend (and needed).

Runs the nft transactions the backend writes as an unprivileged user holding the unit's
AmbientCapabilities — and CAP_NET_ADMIN alone — with no_new_privs (NoNewPrivileges=yes),
inside a private network namespace that disappears with the process.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from fsguard_firewall import nft_ruleset as nr
from tests.test_deploy import unit, words

SCRIPT = textwrap.dedent(
    r"""
    set -u
    as_user() { setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs "$@"; }
    with_caps() {
        setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
            --inh-caps="$CAPS" --ambient-caps="$CAPS" "$@"
    }
    if as_user nft list ruleset >/dev/null 2>&1; then
        echo "FAIL: nft works without capabilities"; exit 1
    fi
    with_caps nft -f - <"$DIR/create.nft" || exit 1
    with_caps nft -f - <"$DIR/add.nft" || exit 1
    with_caps nft -j list set inet fsguard fsg | grep -q '"192.0.2.7"' || exit 1
    with_caps nft get element inet fsguard fsg-v6 '{ 2001:db8:: }' >/dev/null || exit 1
    with_caps nft -j -t list table inet fsguard >/dev/null || exit 1
    with_caps nft delete table inet fsguard || exit 1
    echo OK
    """
)


def _transactions(tmp: Path) -> None:
    spec = nr.table_spec("fsguard", "fsg", 64)
    (tmp / "create.nft").write_text("\n".join(spec.render()) + "\n")
    batch = nr.Batch()
    v4 = nr.render_element(ipaddress.ip_address("192.0.2.7"), 60)
    v6 = nr.render_element(ipaddress.IPv6Network("2001:db8::/64"), 0)
    batch.block("add", "fsguard", "fsg", [(0, v4)])
    batch.block("add", "fsguard", "fsg-v6", [(1, v6)])
    (tmp / "add.nft").write_text(batch.text())


@pytest.mark.netns
@pytest.mark.parametrize("which", ["unit", "net_admin only"])
def test_nft_runs_unprivileged_with_the_units_capabilities(tmp_path: Path, which: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace and switch users")
    tools = {name: shutil.which(name) for name in ("unshare", "setpriv", "nft", "bash")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    caps = sorted(words(unit("firewall")["Service"], "AmbientCapabilities"))
    assert "CAP_NET_ADMIN" in caps
    if which != "unit":
        caps = ["CAP_NET_ADMIN"]
    _transactions(tmp_path)
    env = {
        "CAPS": ",".join("+" + c.removeprefix("CAP_").lower() for c in caps),
        "DIR": str(tmp_path),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    result = subprocess.run(
        ["unshare", "--net", "bash", "-c", SCRIPT],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), (
        result.stdout + result.stderr
    )
