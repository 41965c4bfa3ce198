"""Store hooks the fleet outbox relies on: called inside the ban's own transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fsguard_firewall.store import BanRecord, Store


def rec(key: str, source: str = "rule") -> BanRecord:
    return BanRecord(key=key, rule="failed_auth", reason="r", created=100.0, expires=1e12,
                     source=source)  # fmt: skip


def test_hook_runs_in_the_ban_transaction(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        seen: list[list[str]] = []

        def hook(db: sqlite3.Connection, records: list[BanRecord]) -> None:
            seen.append([r.key for r in records])
            if any(r.key == "203.0.113.66" for r in records):
                raise RuntimeError("outbox write failed")

        store.on_bans_added.append(hook)
        store.add_bans([rec("203.0.113.1"), rec("203.0.113.2")])
        assert seen == [["203.0.113.1", "203.0.113.2"]]
        store.add_bans([rec("203.0.113.1")])  # already active: no new insertion, no hook
        assert len(seen) == 1
        with pytest.raises(RuntimeError):
            store.add_bans([rec("203.0.113.66")])
        assert store.get_ban("203.0.113.66") is None  # the ban rolled back with its outbox

        removed: list[str] = []
        store.on_ban_removed.append(lambda db, key: removed.append(key))
        assert store.remove_bans(["203.0.113.1", "203.0.113.2", "203.0.113.9"]) == 2
        assert removed == ["203.0.113.1", "203.0.113.2"]


def test_fleet_bans_are_not_reported_to_chandaemon(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        changed, queued = store.add_bans_reported(
            [rec("203.0.113.5", "upstream"), rec("203.0.113.6")], lambda r: "{}"
        )
        assert len(changed) == 2 and queued == 1
        assert not store.is_pending("203.0.113.5") and store.is_pending("203.0.113.6")
