"""fsguard_firewall.store against real SQLite files in tmp dirs."""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsguard_firewall import store as store_mod
from fsguard_firewall.store import (
    SCHEMA_VERSION,
    BanRecord,
    ImportDataError,
    Store,
    StoreError,
    WhitelistRecord,
)

REPO = Path(__file__).resolve().parents[1]
NOW = 1_700_000_000.0


def ban(
    key: str,
    *,
    at: float = NOW,
    ttl: float | None = 3600.0,
    did: str = "",
    evidence: dict[str, Any] | None = None,
    **kw: object,
) -> BanRecord:
    return BanRecord(
        key=key,
        rule=str(kw.get("rule", "failed_auth")),
        reason=str(kw.get("reason", "Exceeded max failed registrations (5)")),
        created=at,
        expires=None if ttl is None else at + ttl,
        decision_id=did,
        user=str(kw.get("user", "")),
        source=str(kw.get("source", "rule")),
        evidence=dict(evidence or {}),
    )


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "fsguard.db")


@pytest.fixture
def st(db_path: str) -> Iterator[Store]:
    s = Store(db_path, backoff_base=2.0, backoff_cap=60.0, outbox_max_pending=5, max_attempts=0)
    yield s
    s.close()


# --- schema, open errors -------------------------------------------------------------


def test_fresh_file_has_schema_and_wal(st: Store, db_path: str) -> None:
    assert st.schema_version == SCHEMA_VERSION
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [r[0] for r in raw.execute("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"bans", "whitelist", "untrusted_patterns", "recidive", "outbox"} <= tables
        assert "processed_decisions" in tables
    finally:
        raw.close()
    assert st._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert os.stat(db_path).st_mode & 0o077 == 0


def test_migrates_hand_made_v1_file_keeping_data(db_path: str) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied REAL)")
    for sql in store_mod.MIGRATIONS[0][1]:
        raw.execute(sql)
    raw.execute("INSERT INTO schema_version VALUES (1, 0)")
    raw.execute(
        "INSERT INTO bans VALUES ('198.51.100.7', 4, 'failed_auth', 'r', ?, NULL, 'rule', "
        "'d1', 'bob', '{\"count\": 5}')",
        (NOW,),
    )
    raw.commit()
    raw.close()
    with Store(db_path) as s:
        assert s.schema_version == SCHEMA_VERSION
        got = s.get_ban("198.51.100.7")
        assert got is not None and got.permanent and got.evidence == {"count": 5}
        indexes = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "bans_expires" in indexes
    with Store(db_path) as s:  # reopening applies nothing twice
        count = s._db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0]
        assert count == SCHEMA_VERSION


def test_empty_v0_file_gets_full_schema(db_path: str) -> None:
    Path(db_path).write_bytes(b"")
    with Store(db_path) as s:
        assert s.schema_version == SCHEMA_VERSION


def test_newer_schema_version_is_refused(db_path: str) -> None:
    Store(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match=r"schema version 3, newer than this fsguard knows \(2\)"):
        Store(db_path)


def test_foreign_sqlite_file_is_refused(db_path: str) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE something (x)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="not an fsguard state file"):
        Store(db_path)


def test_garbage_file_is_corrupted_error(db_path: str) -> None:
    with Store(db_path) as s:
        s.add_bans([ban("192.0.2.1")])
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.unlink(db_path + suffix)
    size = os.path.getsize(db_path)
    with open(db_path, "r+b") as fh:
        fh.write(os.urandom(size))
    with pytest.raises(StoreError, match="corrupted"):
        Store(db_path)
    assert os.path.getsize(db_path) == size  # not replaced by a fresh file


def test_damaged_pages_are_corrupted_error(db_path: str) -> None:
    with Store(db_path) as s:
        s.add_bans([ban(f"192.0.2.{i}") for i in range(1, 250)])
    with open(db_path, "r+b") as fh:  # keep the header, smash the pages after it
        fh.seek(4096)
        fh.write(b"\xa5" * 8192)
    with pytest.raises(StoreError, match="corrupted"):
        Store(db_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store(str(tmp_path / "nope" / "fsguard.db"))


def _open_error_in_child(target: str, uid: int | None) -> str:
    """Open the store in a forked child (as `uid` when given); return its StoreError text."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.close(read_fd)
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            try:
                Store(target).close()
                os.write(write_fd, b"opened")
            except StoreError as exc:
                os.write(write_fd, str(exc).encode())
                code = 3
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        text = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3, text
    return text


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp root is 0700)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        os.chmod(name, 0o777)
        yield Path(name)


# root ignores mode bits, so these open the store as nobody
_UID = 65534 if os.geteuid() == 0 else None


def test_unwritable_directory(open_dir: Path) -> None:
    locked = open_dir / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    target = str(locked / "fsguard.db")
    assert "is not writable" in _open_error_in_child(target, _UID)
    assert not os.path.exists(target)


def test_unwritable_file(open_dir: Path) -> None:
    target = open_dir / "fsguard.db"
    Store(str(target)).close()
    for path in open_dir.iterdir():
        path.chmod(0o666)
    target.chmod(0o444)
    assert "not readable and writable" in _open_error_in_child(str(target), _UID)


def test_unreachable_directory(open_dir: Path) -> None:
    hidden = open_dir / "private"
    (hidden / "state").mkdir(parents=True)
    hidden.chmod(0o700)
    if _UID is None:
        pytest.skip("needs root to open as another user")
    message = _open_error_in_child(str(hidden / "state" / "fsguard.db"), _UID)
    assert "Permission denied" in message


def test_second_owner_is_refused(st: Store, db_path: str) -> None:
    with pytest.raises(StoreError, match="in use by another process"):
        Store(db_path)


def test_closed_store_raises(db_path: str) -> None:
    s = Store(db_path)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.active_bans(NOW)


# --- bans ------------------------------------------------------------------------------


def test_batch_add_and_dedupe(st: Store) -> None:
    batch = [ban(f"203.0.113.{i}", did=f"d{i}") for i in range(1, 101)]
    batch.append(ban("203.0.113.5", did="dup-key"))  # same key again in the batch: no-op
    added = st.add_bans(batch)
    assert [b.key for b in added] == [f"203.0.113.{i}" for i in range(1, 101)]
    assert all(b.family == 4 for b in added)
    assert st.ban_count() == 100
    # re-ban of an active key with the same expiry: nothing new, no duplicate row
    assert st.add_bans([ban("203.0.113.1", at=NOW + 10, ttl=3000)]) == []
    # longer ban extends it and keeps the original created time
    (ext,) = st.add_bans([ban("203.0.113.1", at=NOW + 10, ttl=7200, reason="again")])
    assert ext.expires == NOW + 7210 and ext.created == NOW and ext.reason == "again"
    # permanent upgrade
    (perm,) = st.add_bans([ban("203.0.113.1", at=NOW + 20, ttl=None)])
    assert perm.permanent
    assert st.add_bans([ban("203.0.113.1", at=NOW + 30, ttl=10**6)]) == []
    assert st.ban_count() == 100
    got = st.get_ban("203.0.113.1")
    assert got is not None and got.permanent


def test_ipv6_prefix_and_normalization(st: Store) -> None:
    (b,) = st.add_bans([ban("2001:db8:1::/48")])
    assert b.family == 6
    with pytest.raises(ValueError, match="not normalized"):
        st.add_bans([ban("2001:DB8::1")])
    with pytest.raises(ValueError, match="not normalized"):
        st.add_bans([ban("::ffff:192.0.2.1")])
    with pytest.raises(ValueError):
        st.add_bans([ban("not-an-ip")])
    with pytest.raises(ValueError, match="unknown source"):
        st.add_bans([ban("192.0.2.9", source="bogus")])
    assert st.ban_count() == 1


def test_decision_ids_pruned_by_age_and_count(st: Store) -> None:
    st.add_bans([ban(f"192.0.2.{i}", at=NOW + i, did=f"d{i}") for i in range(1, 21)])
    got = st.prune(NOW + 30, recidive_keep=1e9, decisions_keep=20, decisions_max=15)
    assert got["decisions"] == 9  # d1..d9 are older than NOW+10
    assert got["decisions_over_cap"] == 0  # 11 left, under the cap
    got = st.prune(NOW + 30, recidive_keep=1e9, decisions_keep=1e9, decisions_max=5)
    assert got["decisions_over_cap"] == 6
    assert [st.seen_decision(f"d{i}") for i in (15, 16, 20)] == [False, True, True]


def test_decision_ids_are_idempotent(st: Store) -> None:
    assert not st.seen_decision("w1-42-7")
    assert len(st.add_bans([ban("192.0.2.10", did="w1-42-7")])) == 1
    assert st.seen_decision("w1-42-7")
    st.remove_ban("192.0.2.10")
    # the same decision re-sent after an unban must not re-ban
    assert st.add_bans([ban("192.0.2.10", did="w1-42-7", at=NOW + 5)]) == []
    assert st.get_ban("192.0.2.10") is None
    # and twice in one batch
    assert len(st.add_bans([ban("192.0.2.11", did="x"), ban("192.0.2.12", did="x")])) == 1


def test_expiry_is_incremental_and_permanent_stays(st: Store) -> None:
    st.add_bans([ban(f"198.51.100.{i}", ttl=60) for i in range(1, 26)])
    st.add_bans([ban("198.51.100.200", ttl=None), ban("198.51.100.201", ttl=10_000)])
    assert len(st.active_bans(NOW + 61)) == 2
    first = st.expire(NOW + 61, limit=10)
    second = st.expire(NOW + 61, limit=10)
    third = st.expire(NOW + 61, limit=10)
    assert (len(first), len(second), len(third)) == (10, 10, 5)
    assert st.expire(NOW + 61, limit=10) == []
    assert {b.key for b in st.active_bans(NOW + 61)} == {"198.51.100.200", "198.51.100.201"}
    assert st.expire(NOW + 10**9) == ["198.51.100.201"]
    assert [b.key for b in st.active_bans(NOW + 10**9)] == ["198.51.100.200"]


def test_expired_row_is_replaced_by_a_new_ban(st: Store) -> None:
    st.add_bans([ban("192.0.2.50", ttl=10)])
    (again,) = st.add_bans([ban("192.0.2.50", at=NOW + 100, ttl=10)])
    assert again.created == NOW + 100
    assert st.recidive_count("192.0.2.50", NOW) == 2


def test_recidive_counts_within_window(st: Store) -> None:
    key = "192.0.2.77"
    for i in range(4):  # bans at NOW, +1h, +2h, +3h, each expired before the next
        st.add_bans([ban(key, at=NOW + i * 3600, ttl=600)])
    st.add_bans([ban(key, at=NOW + 3 * 3600 + 1, ttl=900)])  # extension: not a new offence
    assert st.recidive_count(key, NOW) == 4
    assert st.recidive_count(key, NOW + 3600) == 3
    assert st.recidive_count(key, NOW + 3 * 3600 + 1) == 0
    assert st.recidive_count("192.0.2.78", 0) == 0
    st.record_recidive("192.0.2.78", NOW)
    assert st.recidive_count("192.0.2.78", NOW - 1) == 1
    pruned = st.prune(NOW + 4 * 3600, recidive_keep=2 * 3600, decisions_keep=3600)
    assert pruned["recidive"] == 3  # NOW, NOW+1h and the 192.0.2.78 row
    assert st.recidive_count(key, 0) == 2


# --- whitelist, patterns -------------------------------------------------------------------


def test_whitelist_ttl(st: Store) -> None:
    st.whitelist_add(
        WhitelistRecord(ip="192.0.2.5", added=NOW, expires=NOW + 86400, user_id="1001", domain="d")
    )
    st.whitelist_add(WhitelistRecord(ip="2001:db8::5", added=NOW, expires=None, source="manual"))
    got = st.whitelist_get("192.0.2.5", NOW + 10)
    assert got is not None and got.user_id == "1001" and got.last_seen == NOW
    assert st.whitelist_get("192.0.2.5", NOW + 86400) is None
    assert [w.ip for w in st.whitelist_active(NOW + 86400)] == ["2001:db8::5"]
    perm = st._db.execute("SELECT permanent FROM whitelist WHERE ip='2001:db8::5'").fetchone()
    assert perm == (1,)
    assert st.prune(NOW + 86400, recidive_keep=1, decisions_keep=1)["whitelist"] == 1
    assert st.whitelist_remove("2001:db8::5") and not st.whitelist_remove("2001:db8::5")
    # a network is stored under its canonical text (issue 14 §2); anything else is refused
    st.whitelist_add(WhitelistRecord(ip="192.0.2.0/24", added=NOW, expires=None))
    assert st.whitelist_get("192.0.2.0/24", NOW) is not None
    for bad in ("192.0.2.7/24", "192.0.2.5/32", "2001:DB8::/48", "nonsense"):
        with pytest.raises(ValueError):
            st.whitelist_add(WhitelistRecord(ip=bad, added=NOW, expires=None))


def test_untrusted_patterns(st: Store) -> None:
    assert st.pattern_add("evil.example", NOW)
    assert not st.pattern_add("evil.example", NOW)
    assert st.pattern_add("cfg.example", NOW, source="config")
    assert st.patterns() == [("cfg.example", "config"), ("evil.example", "runtime")]
    assert st.pattern_remove("evil.example") and not st.pattern_remove("evil.example")
    with pytest.raises(ValueError):
        st.pattern_add("bad\nline", NOW)


# --- outbox ----------------------------------------------------------------------------------


def test_outbox_no_duplicates_and_bounded(st: Store) -> None:
    assert st.enqueue("192.0.2.1", '{"ip":"192.0.2.1"}', NOW)
    assert not st.enqueue("192.0.2.1", '{"ip":"192.0.2.1"}', NOW)  # already pending
    assert st.enqueue_many([(f"192.0.2.{i}", "{}") for i in range(2, 10)], NOW) == 4  # max 5
    assert st.pending_count() == 5
    assert not st.enqueue("192.0.2.99", "{}", NOW)
    (first, *_rest) = st.due(NOW, limit=10)
    st.mark_sent(first.id)
    assert st.pending_count() == 4
    assert st.enqueue("192.0.2.1", "{}", NOW)  # sent: a later ban may be reported again


def test_outbox_backoff_grows_and_caps(st: Store) -> None:
    st.enqueue("192.0.2.1", "{}", NOW)
    now = NOW
    delays = []
    for _ in range(7):
        (item,) = st.due(now, 10)
        assert st.mark_failed(item.id, now, "HTTP 500")
        (after,) = st.due(10**12, 10)
        delays.append(after.next_attempt - now)
        assert st.due(after.next_attempt - 0.001, 10) == []
        now = after.next_attempt
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    (item,) = st.due(now, 10)
    assert item.attempts == 7 and item.last_error == "HTTP 500"


def test_outbox_gives_up_after_max_attempts(db_path: str) -> None:
    with Store(db_path, max_attempts=2) as s:
        s.enqueue("k", "{}", NOW)
        (item,) = s.due(NOW, 1)
        assert s.mark_failed(item.id, NOW, "e")
        assert not s.mark_failed(item.id, NOW + 100, "e")
        assert s.pending_count() == 0


def test_unban_and_expiry_cancel_pending_reports(st: Store) -> None:
    st.add_bans([ban("192.0.2.1", ttl=60), ban("192.0.2.2", ttl=60)])
    st.enqueue("192.0.2.1", "{}", NOW)
    st.enqueue("192.0.2.2", "{}", NOW)
    st.remove_ban("192.0.2.1")
    st.expire(NOW + 61)
    assert st.pending_count() == 0


# --- export / import ------------------------------------------------------------------------


def _fill(s: Store) -> None:
    s.add_bans(
        [
            ban("203.0.113.9", did="a", user="2017301000", evidence={"count": 5, "ua": "x"}),
            ban("2001:db8:aa::/48", ttl=None, source="manual", reason="manual"),
            ban("203.0.113.10", ttl=5),  # expired at import time: skipped
        ]
    )
    s.whitelist_add(
        WhitelistRecord(ip="192.0.2.5", added=NOW, expires=NOW + 86400, user_id="1001", domain="d")
    )
    s.pattern_add("evil.example", NOW)


def test_export_import_round_trip(tmp_path: Path, st: Store) -> None:
    _fill(st)
    data = json.loads(json.dumps(st.export_json()))  # through real JSON text
    assert data["blacklist"]["203.0.113.9"]["failCount"] == 5
    assert data["blacklist"]["2001:db8:aa::/48"]["permanent"] is True
    with Store(str(tmp_path / "other.db")) as fresh:
        assert fresh.import_json(data, NOW + 60) == 4  # 2 bans, 1 whitelist, 1 pattern
        a = {b.key: b for b in st.active_bans(NOW + 60)}
        b = {b.key: b for b in fresh.active_bans(NOW + 60)}
        assert a.keys() == b.keys() == {"203.0.113.9", "2001:db8:aa::/48"}
        for key in a:
            x, y = a[key], b[key]
            assert (x.rule, x.reason, x.source, x.user, x.evidence, x.family) == (
                y.rule, y.reason, y.source, y.user, y.evidence, y.family,
            )  # fmt: skip
            assert y.created == pytest.approx(x.created, abs=1e-5)
            assert (x.expires is None) == (y.expires is None)
            if x.expires is not None and y.expires is not None:
                assert y.expires == pytest.approx(x.expires, abs=1e-5)
        assert fresh.whitelist_get("192.0.2.5", NOW + 60) is not None
        assert fresh.patterns() == [("evil.example", "runtime")]


def test_import_accepts_go_blacklist_shape_with_nanoseconds(st: Store) -> None:
    data = {
        "version": 1,
        "blacklist": {
            "198.51.100.4": {
                "ip": "198.51.100.4",
                "addedAt": "2023-11-14T22:13:20.123456789Z",
                "expiresAt": "2099-01-01T00:00:00Z",
                "reason": "Exceeded max failed registrations (5)",
                "failCount": 0,
                "permanent": False,
            }
        },
    }
    assert st.import_json(data, NOW) == 1
    got = st.get_ban("198.51.100.4")
    assert got is not None and got.created == pytest.approx(1_700_000_000.123456)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "unsupported version 2"),
        (lambda d: d.update(extra=1), "unknown keys"),
        (lambda d: d["blacklist"]["203.0.113.9"].update(ip="203.0.113.999"), "invalid IP"),
        (lambda d: d["blacklist"]["203.0.113.9"].update(ip="::ffff:1.2.3.4/130"), "invalid IP"),
        (lambda d: d["whitelist"]["192.0.2.5"].update(ip="10.0.0.0/33"), "invalid IP"),
        (lambda d: d["blacklist"]["203.0.113.9"].update(source="x"), "source"),
        (lambda d: d["blacklist"]["203.0.113.9"].update(expiresAt="soon"), "invalid time"),
        (lambda d: d["whitelist"]["192.0.2.5"].update(permanent="yes"), "true or false"),
        (lambda d: d.update(untrustedPatterns=["ok", "bad\n"]), r"untrustedPatterns\[1\]"),
    ],
)
def test_invalid_import_is_all_or_nothing(
    tmp_path: Path, st: Store, mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    _fill(st)
    good = st.export_json()
    bad = copy.deepcopy(good)
    bad["blacklist"]["198.51.100.1"] = {"ip": "198.51.100.1", "permanent": True}  # valid
    mutate(bad)
    with Store(str(tmp_path / "other.db")) as fresh:
        with pytest.raises(ImportDataError, match=message):
            fresh.import_json(bad, NOW + 60)
        assert fresh.active_bans(NOW + 60) == []
        assert fresh.whitelist_active(NOW + 60) == []
        assert fresh.patterns() == []


def test_import_is_one_transaction_even_when_sqlite_fails(
    tmp_path: Path, st: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(st)
    data = st.export_json()
    with Store(str(tmp_path / "other.db")) as fresh:
        fresh._db.execute("CREATE TRIGGER boom BEFORE INSERT ON untrusted_patterns "
                          "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")  # fmt: skip
        with pytest.raises(StoreError, match="disk on fire"):
            fresh.import_json(data, NOW + 60)
        assert fresh.active_bans(NOW + 60) == []  # bans written earlier were rolled back


# --- crash ---------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from fsguard_firewall.store import Store, BanRecord
    s = Store(sys.argv[2])
    now = time.time()
    batch_no = 0
    while True:
        recs = [
            BanRecord(key=f"10.{batch_no // 256 % 256}.{batch_no % 256}.{i}", rule="r",
                      reason="crash test", created=now, expires=None, decision_id=f"{batch_no}-{i}")
            for i in range(200)
        ]
        s.add_bans(recs)
        sys.stdout.write(f"ACK {batch_no}\\n")
        sys.stdout.flush()
        batch_no += 1
    """
)


@pytest.mark.parametrize("extra_delay", [0.0, 0.003, 0.02])
def test_sigkill_mid_stream_loses_no_acknowledged_batch(db_path: str, extra_delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(REPO), db_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acked: list[int] = []
    try:
        while len(acked) < 25:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "child died"
            acked.append(int(line.split()[1]))
        time.sleep(extra_delay)  # vary where in its loop the child is hit
        os.kill(proc.pid, signal.SIGKILL)
        acked += [int(line.split()[1]) for line in proc.stdout.read().splitlines()]
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    acked_keys = {f"10.{b // 256 % 256}.{b % 256}.{i}" for b in acked for i in range(200)}
    with Store(db_path) as s:
        present = {b.key for b in s.active_bans(time.time())}
    missing = acked_keys - present
    assert not missing, f"{len(missing)} acknowledged bans lost"
    assert len(present) % 200 == 0  # whole batches only: no torn transaction
    assert len(present) >= len(acked_keys) >= 25 * 200
    print(f"acked batches={len(acked)} keys={len(acked_keys)} present={len(present)}")


def test_reports_are_queued_in_the_bans_transaction(st: Store) -> None:
    """A new ban and its report commit together; extensions and repeats queue nothing."""
    payload = lambda r: json.dumps({"ip": r.key})  # noqa: E731
    changed, queued = st.add_bans_reported(
        [ban("203.0.113.60", did="d1"), ban("203.0.113.61", did="d2")], payload
    )
    assert (len(changed), queued) == (2, 2)
    assert st.pending_count() == 2
    # The same decision again, and an extension of an active ban: no new report.
    _, queued = st.add_bans_reported(
        [ban("203.0.113.60", did="d1"), ban("203.0.113.61", ttl=None, did="d3")], payload
    )
    assert queued == 0
    assert st.pending_count() == 2


def test_a_failing_report_rolls_the_ban_back_too(st: Store) -> None:
    """Proof that both writes share one transaction: if building the report fails,
    the ban is not committed either (nothing half-done survives)."""

    def broken(_: BanRecord) -> str:
        raise RuntimeError("payload failure")

    with pytest.raises(RuntimeError):
        st.add_bans_reported([ban("203.0.113.62", did="d9")], broken)
    assert st.get_ban("203.0.113.62") is None
    assert st.pending_count() == 0
    assert not st.seen_decision("d9")
