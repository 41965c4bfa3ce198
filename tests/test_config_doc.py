"""docs/config.md is the configuration reference generated from the schema: it stays current."""

from __future__ import annotations

from pathlib import Path

from shared.config_doc import DESCRIPTIONS, render, rows

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "run `.venv/bin/python -m shared.config_doc > docs/config.md` (or `make config-doc`)"


def test_committed_config_reference_is_current() -> None:
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == render(), f"docs/config.md is stale: {REGENERATE}"


def test_every_key_is_described_with_type_default_and_reload() -> None:
    keys = [row[0].strip("`") for row in rows()]
    assert len(keys) == len(set(keys)) and len(keys) > 50
    missing = [k for k in keys if k not in DESCRIPTIONS]
    assert not missing, f"add a description to shared/config_doc.py DESCRIPTIONS: {missing}"
    stale = set(DESCRIPTIONS) - set(keys)
    assert not stale, f"DESCRIPTIONS names keys the schema no longer has: {sorted(stale)}"
    for key, type_, default, _env, reload, _ in rows():
        assert type_ and default and reload in ("yes", "restart"), key
    by_key = {row[0].strip("`"): row for row in rows()}
    expected = ("duration", "`1h`", "`SECURITY_BLOCK_DURATION`")
    assert by_key["security.block_duration"][1:4] == expected
    assert by_key["server.port"][4] == "restart" and by_key["workers.count"][4] == "restart"
    assert by_key["paths.state_dir"][4] == "restart"
