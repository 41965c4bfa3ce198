"""issue 12 §5: docs/rules.md is generated from the rule catalog and stays in step."""

from __future__ import annotations

from pathlib import Path

import msgspec

from fsguard_workers.rules import catalog, doc, reasons
from shared.config import Config, RulesConfig

ROOT = Path(__file__).resolve().parent.parent


def test_rules_reference_is_current() -> None:
    current = (ROOT / "docs" / "rules.md").read_text()
    assert current == doc.render(), (
        "docs/rules.md is out of date with fsguard_workers/rules/catalog.py; "
        f"regenerate it: {doc.REGENERATE}"
    )


def test_catalog_covers_every_configurable_rule_and_every_rule_name() -> None:
    names = [r.name for r in catalog.RULES]
    assert len(names) == len(set(names))
    assert set(names) == {f.name for f in msgspec.structs.fields(RulesConfig)}
    constants = {v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}
    assert constants <= set(names)


def test_every_documented_key_exists_with_its_default() -> None:
    config = Config()
    for rule in catalog.RULES:
        for key in (*rule.keys, rule.duration_key):
            node: object = config
            for part in key.split("."):
                assert hasattr(node, part), f"{rule.name}: unknown key {key}"
                node = getattr(node, part)
        assert rule.reason(config)


def test_the_page_follows_the_defaults() -> None:
    page = doc.render()
    assert "`security.max_failed_attempts` | `5`" in page
    assert "Exceeded max failed registrations (5)" in page
    assert "registration rate limit exceeded (11 in 1m0s)" in page
    assert "| `bare_ip` |" in page and "`off` |" in page
