"""shared.audit: the JSON-lines file and the SQLite table, alone and in the real system
(a manual ban and an ESL command through the API leave audit records)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsguard_api import access
from shared.audit import AuditHandler, AuditLog, install_handler, read_records
from shared.config import Config, LoggingConfig, PathsConfig
from tests.netns_helpers import requires_netns
from tests.system_helpers import wait_for
from tests.test_metrics import FsguardSystem, failures, fsguard_system


def _config(tmp: Path, audit_file: str = "") -> Config:
    return Config(paths=PathsConfig(runtime_dir=str(tmp / "run"), state_dir=str(tmp / "state")),
                  logging=LoggingConfig(audit_file=audit_file))


def _rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]


# --- unit: real files ------------------------------------------------------------------------


def test_record_writes_a_json_line_and_a_row_with_escaped_text(tmp_path: Path) -> None:
    audit = AuditLog(_config(tmp_path), "firewall")
    assert not (tmp_path / "state").exists()  # nothing is created before the first record
    audit.record("ban", actor="rule:failed_auth", target="203.0.113.5", outcome="ok",
                 details={"user_agent": "a\r\nb\x00", "nested": {"k\n": ["\x1b[31m"]}, "n": 5})
    audit.close()
    records = read_records(tmp_path / "state" / "audit.log")
    assert len(records) == 1
    rec = records[0]
    assert (rec["role"], rec["action"], rec["actor"], rec["target"], rec["outcome"]) == (
        "firewall", "ban", "rule:failed_auth", "203.0.113.5", "ok")
    assert rec["pid"] == os.getpid() and rec["time"].endswith("Z")
    assert rec["details"] == {"user_agent": "a\\r\\nb\\x00", "nested": {"k\\n": ["\\x1b[31m"]},
                              "n": 5}
    rows = _rows(tmp_path / "state" / "audit.db")
    assert len(rows) == 1 and rows[0]["target"] == "203.0.113.5"
    assert json.loads(rows[0]["details"]) == rec["details"]
    with sqlite3.connect(tmp_path / "state" / "audit.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_audit_file_setting_and_batches(tmp_path: Path) -> None:
    audit = AuditLog(_config(tmp_path, str(tmp_path / "elsewhere" / "a.log")), "firewall")
    with audit.batch():
        for n in range(3):
            audit.record("ban", actor="rule:x", target=f"192.0.2.{n}")
        out = tmp_path / "elsewhere" / "a.log"
        assert not out.exists() or not out.read_bytes()  # one write at the end
    audit.close()
    assert [r["target"] for r in read_records(tmp_path / "elsewhere" / "a.log")] == [
        "192.0.2.0", "192.0.2.1", "192.0.2.2"]
    assert len(_rows(tmp_path / "state" / "audit.db")) == 3


def _writer(tmp: str, role: str) -> None:
    audit = AuditLog(_config(Path(tmp)), role)
    for n in range(200):
        audit.record("esl_command", actor=role, target=f"status {n}")
    audit.close()


def test_several_processes_share_the_file_and_the_table(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), f"p{i}")) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    records = read_records(tmp_path / "state" / "audit.log")  # every line parses
    assert len(records) == 600
    assert len(_rows(tmp_path / "state" / "audit.db")) == 600


def test_an_unwritable_state_dir_disables_auditing_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state").write_text("a file, not a directory")
    audit = AuditLog(_config(tmp_path), "api")
    audit.record("ban", actor="x", target="y")
    audit.flush()  # the writer thread opens the files
    audit.record("ban", actor="x", target="y")
    assert not audit.enabled
    assert sum("audit stream disabled" in r.getMessage() for r in caplog.records) == 1


def test_the_api_audit_logger_reaches_the_audit_log(tmp_path: Path) -> None:
    audit = AuditLog(_config(tmp_path), "api")
    handler = install_handler(audit)
    try:
        scope = {"client": ("192.0.2.8", 5555), "state": {"identity": "token"}}
        access.audit(scope, "esl_command", "status\r\nx", "ok")
        logging.getLogger("fsguard.audit").info("something else")
    finally:
        logging.getLogger("fsguard.audit").removeHandler(handler)
        audit.close()
    first, second = read_records(tmp_path / "state" / "audit.log")
    assert (first["action"], first["actor"], first["target"], first["outcome"]) == (
        "api.esl_command", "token@192.0.2.8", "status\\r\\nx", "ok")
    assert second["action"] == "api.log" and second["details"] == {"msg": "something else"}
    assert isinstance(handler, AuditHandler)


# --- the real system ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FsguardSystem]:
    with fsguard_system(tmp_path_factory.mktemp("audit"), set_name="fsg-audit",
                        port=18095) as running:
        yield running


@requires_netns
def test_manual_ban_esl_command_and_rule_ban_are_audited(system: FsguardSystem) -> None:
    status, body = system.http("POST", "/security/blacklist",
                               {"ip": "192.0.2.50", "reason": "manual\ntest"})
    assert status == 200, body
    status, body = system.http("POST", "/security/esl/command", {"command": "status"})
    assert status == 200, body
    status, body = system.http("DELETE", "/security/blacklist/192.0.2.50")
    assert status == 200, body
    system.fake.send_events(failures("203.0.113.40", 6))
    assert wait_for(lambda: system.in_set("203.0.113.40"), 10)
    system.proc.send_signal(signal.SIGTERM)
    assert system.proc.wait(15) == 0

    records = read_records(system.state_dir / "audit.log")

    def one(**match: str) -> dict[str, Any]:
        found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
        assert len(found) == 1, (match, records)
        return found[0]

    api_ban = one(role="api", action="api.blacklist_add", target="192.0.2.50")
    assert api_ban["actor"] == "anonymous@127.0.0.1" and api_ban["outcome"] == "ok"
    fw_ban = one(role="firewall", action="ban", target="192.0.2.50")
    assert fw_ban["outcome"] == "ok" and fw_ban["details"]["reason"] == "manual\\ntest"
    one(role="firewall", action="unban", target="192.0.2.50", outcome="ok")
    one(role="api", action="api.esl_command", target="status", outcome="ok")
    esl = one(role="supervisor", action="esl_command", target="status")
    assert esl["outcome"] == "ok" and esl["actor"] == "api"
    rule_ban = one(role="firewall", action="ban", target="203.0.113.40")
    assert rule_ban["actor"] == "rule:failed_auth"

    rows = _rows(system.state_dir / "audit.db")
    assert {(r["role"], r["action"], r["target"]) for r in rows} == {
        (r["role"], r["action"], r["target"]) for r in records}
