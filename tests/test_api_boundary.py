"""Numbers and strings at the API boundary (issue 11 §3), over real HTTP against the real tree.

A ban duration out of range is refused before anything is written (store, kernel); a stored
ban that cannot be shown (left by an older version) is reported and skipped, so the list and
`fsguard bans` keep answering; a command that is not valid UTF-8 is a 400.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsguard_firewall.store import BanRecord, Store, default_path
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from tests.netns_helpers import requires_netns
from tests.system_helpers import FSGUARD
from tests.test_api_system import AUTH, TOKEN, System, delete, post, running_system

pytestmark = [requires_netns]

BAD_ROW_IP = "203.0.113.200"
GOOD_ROW_IP = "203.0.113.201"


def seed_store(state_dir: Path) -> None:
    """What the old bug left behind: a committed ban whose expiry is year ~33000."""
    state_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with Store(default_path(str(state_dir))) as store:
        store.add_bans([
            BanRecord(key=BAD_ROW_IP, rule="manual", reason="huge", created=now,
                      expires=now + 1e12, source="manual"),
            BanRecord(key=GOOD_ROW_IP, rule="manual", reason="fine", created=now,
                      expires=now + 3600, source="manual"),
        ])  # fmt: skip


@pytest.fixture(scope="module")
def sysb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("apibound")
    seed_store(tmp / "state")
    with running_system(tmp, prefix="fsgbnd") as s:
        yield s


def bans_cli(s: System) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FSGUARD, "bans", "--api", s.url, "--token", TOKEN, "--json"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "duration", [1e12, "1e12", 1e308, "300000000000s", "1000000h", "200y", -5, 0, "0s"]
)
def test_out_of_range_duration_is_refused_and_writes_nothing(
    sysb: System, duration: object
) -> None:
    ip = "203.0.113.77"
    r = post(sysb, "/security/blacklist", {"ip": ip, "reason": "x", "duration": duration})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("invalid duration"), r.text
    assert sysb.client.get(f"/security/blacklist/{ip}").json()["blacklisted"] is False
    assert not sysb.in_set(ip)
    listing = sysb.client.get("/security/blacklist")
    assert listing.status_code == 200 and ip not in listing.json()


def test_longest_accepted_duration_lists_fine(sysb: System) -> None:
    ip = "203.0.113.78"
    r = post(sysb, "/security/blacklist", {"ip": ip, "duration": "876000h"})  # 100 years
    assert r.status_code == 200, r.text
    assert sysb.in_set(ip)
    entry = sysb.client.get("/security/blacklist").json()[ip]
    assert entry["expiresAt"].startswith("21"), entry  # a real date, ~100 years ahead
    assert delete(sysb, f"/security/blacklist/{ip}").status_code == 200


def test_batch_reports_out_of_range_item_without_writing_it(sysb: System) -> None:
    body = [
        {"ip": "203.0.113.80", "duration": 1e13},
        {"ip": "203.0.113.81", "duration": "1h"},
    ]
    r = post(sysb, "/security/blacklist/batch", body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["ip"] == "203.0.113.80" and "invalid duration" in results[0]["error"]
    assert results[1] == {"ip": "203.0.113.81", "status": "success"}
    listing = sysb.client.get("/security/blacklist").json()
    assert "203.0.113.80" not in listing and "203.0.113.81" in listing


def test_unshowable_stored_ban_is_skipped_and_reported(sysb: System) -> None:
    r = sysb.client.get("/security/blacklist")
    assert r.status_code == 200, r.text
    assert GOOD_ROW_IP in r.json() and BAD_ROW_IP not in r.json()
    assert sysb.running.firewall(fwo.STATS, Empty()).bad_ban_rows >= 1
    log = sysb.log.read_text(errors="replace")
    assert f"skipped unreadable ban ip={BAD_ROW_IP}" in log, log[-2000:]
    done = bans_cli(sysb)
    assert done.returncode == 0, done.stderr
    assert GOOD_ROW_IP in done.stdout and BAD_ROW_IP not in done.stdout
    # the bad row can still be lifted
    assert delete(sysb, f"/security/blacklist/{BAD_ROW_IP}").status_code == 200


def test_command_that_is_not_utf8_is_400(sysb: System) -> None:
    before = list(sysb.fake.commands)
    r = sysb.client.post(
        "/security/esl/command",
        content=b'{"command": "status \\ud800"}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "command is not valid UTF-8"}
    assert sysb.fake.commands == before
    # the tree is still healthy
    assert post(sysb, "/security/esl/command", {"command": "status"}).status_code == 200
