"""The audit stream off the event loop, bounded, with retention (issue 10 §5).

Real SQLite and real files: the database is locked by another connection (as a busy
firewall holds it), and old records are real rows and lines written before the test.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import msgspec
import pytest

from shared.audit import AuditLog, read_records
from shared.config import Config, ConfigError, LoggingConfig, PathsConfig, config_from_dict

DAY = 86400.0


def _config(tmp: Path, **logging: object) -> Config:
    return Config(paths=PathsConfig(runtime_dir=str(tmp / "run"), state_dir=str(tmp / "state")),
                  logging=msgspec.structs.replace(LoggingConfig(), **logging))


def _count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])


def _recording_thread(audit: AuditLog, n: int) -> threading.Thread:
    def body() -> None:
        for i in range(n):
            audit.record("esl_command", actor="rule:x", target=f"uuid_kill {i}")

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def test_record_does_not_wait_for_a_locked_database(tmp_path: Path) -> None:
    audit = AuditLog(_config(tmp_path), "supervisor")
    audit.record("esl_command", actor="api", target="status")  # creates the files
    assert audit.flush()
    db = tmp_path / "state" / "audit.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # every insert now waits up to the 5 s busy timeout
    try:
        thread = _recording_thread(audit, 50)
        # Before: 50 synchronous inserts x 5 s. Now each record() only queues.
        thread.join(30)
        assert not thread.is_alive()
        assert audit.dropped == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert audit.flush()
    audit.close()
    assert _count(db) == 51 and audit.errors == 0  # nothing lost
    assert len(read_records(tmp_path / "state" / "audit.log")) == 51


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    audit = AuditLog(_config(tmp_path), "supervisor", queue_max=10)
    audit.record("esl_command", actor="api", target="status")
    assert audit.flush()
    holder = sqlite3.connect(tmp_path / "state" / "audit.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # the writer is stuck in a transaction
    try:
        thread = _recording_thread(audit, 500)
        thread.join(30)
        assert not thread.is_alive()
        assert audit.dropped > 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    audit.close()
    lines = read_records(tmp_path / "state" / "audit.log")
    assert len(lines) + audit.dropped == 501  # every record is either written or counted


def _old_rows(db: Path, ages_days: list[float]) -> None:
    now = time.time()
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO audit (ts, time, role, pid, action, actor, target, outcome, details)"
            " VALUES (?, '', 'firewall', 1, 'ban', 'rule:x', ?, 'ok', '{}')",
            [(now - age * DAY, f"192.0.2.{i}") for i, age in enumerate(ages_days)])


def test_age_retention_of_the_database_and_the_log(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = AuditLog(_config(tmp_path), "firewall")
    first.record("ban", actor="rule:x", target="192.0.2.200")
    first.close()
    _old_rows(state / "audit.db", [100, 40, 29, 1])
    log = state / "audit.log"
    old_line = json.dumps({"ts": time.time() - 20 * DAY, "action": "ban"}) + "\n"
    log.write_text(old_line + log.read_text())  # the current file starts 20 days back
    rotated = state / "audit.log.1"
    rotated.write_text(old_line)
    os.utime(rotated, (time.time() - 16 * DAY,) * 2)  # its newest record: 16 days old

    audit = AuditLog(_config(tmp_path, audit_max_age=30 * DAY), "firewall")
    audit.record("ban", actor="rule:x", target="192.0.2.201")
    audit.close()
    with sqlite3.connect(state / "audit.db") as conn:
        targets = {r[0] for r in conn.execute("SELECT target FROM audit")}
    assert targets == {"192.0.2.200", "192.0.2.2", "192.0.2.3", "192.0.2.201"}
    # audit.log.1 (newest record older than max_age/2) deleted; audit.log (first record
    # older than max_age/2) rotated to audit.log.1
    assert read_records(rotated)[0]["ts"] < time.time() - 19 * DAY
    assert not log.exists() or all(
        r["ts"] > time.time() - 15 * DAY for r in read_records(log))


def test_size_retention_keeps_both_files_near_the_limit(tmp_path: Path) -> None:
    limit = 256 * 1024
    audit = AuditLog(_config(tmp_path, audit_max_bytes=limit), "firewall")
    for i in range(6000):  # ~2 MB of records
        audit.record("ban", actor="rule:failed_auth", target=f"198.51.{i // 256}.{i % 256}",
                     details={"reason": "x" * 100})
        if i % 500 == 0:
            assert audit.flush()
    audit.close()
    state = tmp_path / "state"
    log_bytes = sum(p.stat().st_size for p in state.glob("audit.log*") if p.suffix != ".lock")
    assert log_bytes <= limit + 200 * 1024  # one batch of slack
    lines = [r for name in ("audit.log.1", "audit.log") for r in read_records(state / name)]
    assert lines[-1]["target"] == "198.51.23.111"  # the newest records are kept
    with sqlite3.connect(state / "audit.db") as conn:
        newest = conn.execute("SELECT target FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    assert newest == ("198.51.23.111",)
    assert _count(state / "audit.db") < 6000
    assert pages * page_size <= 2 * limit  # the file shrank back (incremental vacuum)


def test_several_writers_rotate_one_file_losing_only_the_oldest_lines(tmp_path: Path) -> None:
    """Three writers (as the firewall, supervisor and API processes) share audit.log; each
    reopens the path after another rotated it, and a rotation never drops a newer line."""
    limit = 128 * 1024
    audits = [AuditLog(_config(tmp_path, audit_max_bytes=limit), f"p{i}") for i in range(3)]
    n = 0
    for _ in range(40):
        for audit in audits:
            for _ in range(10):
                audit.record("ban", actor="rule:x", target=f"203.0.113.{n % 256}",
                             details={"n": n, "pad": "y" * 200})
                n += 1
            assert audit.flush()
    for audit in audits:
        audit.close()
    state = tmp_path / "state"
    numbers = [r["details"]["n"] for name in ("audit.log.1", "audit.log")
               if (state / name).exists() for r in read_records(state / name)]
    assert numbers == list(range(n - len(numbers), n))  # a suffix: only the oldest went
    assert len(numbers) > 100  # at least max_bytes / 2 of the newest lines (~330 B each)


@pytest.mark.parametrize(("key", "value"), [("audit_max_bytes", 1000),
                                            ("audit_max_bytes", -1),
                                            ("audit_max_age", "-1d")])
def test_retention_settings_are_validated(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        config_from_dict({"logging": {key: value}})


def test_retention_defaults() -> None:
    cfg = config_from_dict({"logging": {"audit_max_age": "0"}})
    assert cfg.logging.audit_max_age == 0  # no age limit
    assert Config().logging.audit_max_bytes == 100 * 1024 * 1024
    assert Config().logging.audit_max_age == 90 * DAY
