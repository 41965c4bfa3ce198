"""Attacker bytes in logs, for real: a User-Agent carrying CR, LF and NUL reaches fsguard
URL-encoded in a text/event-plain frame from the fake FreeSWITCH, and must come out
escaped in the JSON log lines and in audit.log / audit.db; a ban flood produces a few
"banned" lines and a summary, never one line per ban.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsguard_cli.simulator import register_failure
from fsguard_supervisor.esl_protocol import event_frame
from shared.audit import read_records
from tests.netns_helpers import requires_netns
from tests.system_helpers import wait_for
from tests.test_metrics import FsguardSystem, fsguard_system

pytestmark = [requires_netns]

EVIL_UA = "evil\r\nINFO fake line\x00"
ESCAPED_UA = "evil\\r\\nINFO fake line\\x00"  # shared.logs.escape of EVIL_UA
ATTACKER = "203.0.113.66"


@pytest.fixture
def system(tmp_path: Path) -> Iterator[FsguardSystem]:
    with fsguard_system(tmp_path, set_name="fsg-logsafe", port=18096) as running:
        yield running


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the process log; each must be one JSON object."""
    out = []
    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            out.append(json.loads(line))  # an injected raw line would fail here
    return out


def test_crlf_nul_from_a_plain_event_are_escaped_in_logs_and_audit(
    system: FsguardSystem,
) -> None:
    frames = [event_frame("plain", register_failure(ATTACKER, user_agent=EVIL_UA))
              for _ in range(6)]
    assert b"user-agent: evil%0D%0AINFO%20fake%20line%00\n" in frames[0]  # the wire form
    system.fake.send_raw(b"".join(frames))
    assert wait_for(lambda: system.in_set(ATTACKER), 10), "attacker was not banned"
    assert wait_for(lambda: system.state_dir.joinpath("audit.log").exists(), 5)
    system.proc.send_signal(signal.SIGTERM)  # flush everything, then read the files
    assert system.proc.wait(15) == 0

    raw_log = system.log.read_bytes()
    assert b"\x00" not in raw_log and b"\r" not in raw_log
    assert not any(line.startswith(b"INFO fake line") for line in raw_log.split(b"\n"))
    lines = _json_lines(system.log)
    banned = [d for d in lines if d["msg"].startswith(f"banned ip={ATTACKER} ")]
    assert len(banned) == 1
    assert f"ua={ESCAPED_UA}" in banned[0]["msg"]
    for doc in lines:
        assert not any(ch in doc["msg"] for ch in "\r\n\x00"), doc

    audit_raw = system.state_dir.joinpath("audit.log").read_bytes()
    assert b"\x00" not in audit_raw and b"\r" not in audit_raw
    records = read_records(system.state_dir / "audit.log")
    bans = [r for r in records if r["action"] == "ban" and r["target"] == ATTACKER]
    assert len(bans) == 1
    assert bans[0]["details"]["user_agent"] == ESCAPED_UA
    assert bans[0]["actor"].startswith("rule:") and bans[0]["outcome"] == "ok"

    with sqlite3.connect(system.state_dir / "audit.db") as db:
        rows = db.execute(
            "SELECT actor, details FROM audit WHERE action = 'ban' AND target = ?", (ATTACKER,)
        ).fetchall()
    assert len(rows) == 1
    assert json.loads(rows[0][1])["user_agent"] == ESCAPED_UA


def test_a_ban_flood_logs_a_few_lines_and_a_summary(system: FsguardSystem) -> None:
    attackers = [f"203.0.113.{n}" for n in range(100, 130)]
    for ip in attackers:
        system.fake.send_events(
            [register_failure(ip, user_agent="friendly-scanner") for _ in range(6)]
        )
    assert wait_for(lambda: all(system.in_set(ip) for ip in attackers), 15)
    system.proc.send_signal(signal.SIGTERM)  # the firewall logs pending summaries at exit
    assert system.proc.wait(15) == 0

    msgs = [d["msg"] for d in _json_lines(system.log) if d.get("role") == "firewall"]
    lines = [m for m in msgs if m.startswith("banned ip=")]
    summaries = [m for m in msgs if m.startswith("banned ") and " more addresses in the last" in m]
    summarised = sum(int(m.split()[1]) for m in summaries)
    assert 1 <= len(lines) < len(attackers)
    assert summaries, msgs
    assert len(lines) + summarised == len(attackers)
