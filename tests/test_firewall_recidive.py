"""Repeat offenders survive a worker restart: the firewall's durable history (SQLite)
escalates a rule ban the restarted worker issued at its base duration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from fsguard_firewall.durable import Durable
from fsguard_firewall.kernel import KernelFirewall
from fsguard_firewall.process import Firewall, MemoryBanStore
from shared.config import Config
from shared.messages import BanDecision

IP = "203.0.113.80"


def _config(tmp: Path) -> Config:
    return msgspec.convert(
        {
            "paths": {"runtime_dir": str(tmp / "run"), "state_dir": str(tmp / "state")},
            "security": {"dry_run": True, "ipset_name": "fsg-recid"},
        },
        type=Config,
    )


def _decision(n: int, prior: int = 0) -> BanDecision:
    """What a worker sends: base 1 h, multiplied by what *it* remembers (`prior`)."""
    return BanDecision(
        id=f"w0-{n}", ip=IP, rule="failed_auth", reason="Exceeded max failed registrations (5)",
        duration=3600.0 * 4**prior, evidence={"base_duration": 3600.0, "recidive_prior": prior},
    )


@pytest.fixture
def firewall(tmp_path: Path) -> Iterator[Firewall]:
    config = _config(tmp_path)
    kernel = KernelFirewall("fsg-recid", "INPUT", default_timeout=3600, dry_run=True)
    durable = Durable.open(config)
    fw = Firewall(config, kernel, store=durable.bans)
    durable.attach(fw)
    try:
        yield fw
    finally:
        durable.store.close()


def _remaining(fw: Firewall) -> float:
    entry = fw.store.get(IP, time.time())
    assert entry is not None
    return entry.expires_at - time.time()


def test_store_history_escalates_a_forgetful_worker(firewall: Firewall) -> None:
    firewall.handle_batch([_decision(1)])
    assert 3590 < _remaining(firewall) <= 3600
    firewall.store.remove(IP)  # ban lifted (unban, or it expired and was purged)
    # The worker restarted: it thinks this is a first offence (prior 0).
    firewall.handle_batch([_decision(2)])
    assert 4 * 3600 - 10 < _remaining(firewall) <= 4 * 3600
    assert firewall.stats.recidive_escalations == 1
    firewall.store.remove(IP)
    # A worker that remembers (prior 2) is never shortened: 16 h stands.
    firewall.handle_batch([_decision(3, prior=2)])
    assert 16 * 3600 - 10 < _remaining(firewall) <= 16 * 3600
    assert firewall.stats.recidive_escalations == 1


def test_without_durable_history_the_worker_decides(tmp_path: Path) -> None:
    config = _config(tmp_path)
    kernel = KernelFirewall("fsg-recid", "INPUT", default_timeout=3600, dry_run=True)
    fw = Firewall(config, kernel, store=MemoryBanStore())
    fw.handle_batch([_decision(1)])
    fw.store.remove(IP)
    fw.handle_batch([_decision(2)])
    assert 3590 < _remaining(fw) <= 3600
    assert fw.stats.recidive_escalations == 0
