"""docs/control.md is generated from the op registries (shared/ops/doc.py) and current."""

from __future__ import annotations

from pathlib import Path

from shared.ops.doc import ROLES, render

PAGE = Path(__file__).resolve().parent.parent / "docs" / "control.md"


def test_the_committed_page_is_current() -> None:
    assert PAGE.read_text() == render(), (
        "docs/control.md is stale: run `.venv/bin/python -m shared.ops.doc > docs/control.md`"
    )


def test_every_op_of_every_role_is_on_the_page_and_documented() -> None:
    page = PAGE.read_text()
    for registry in ROLES:
        assert f"## {registry.role}" in page
        for op in registry:
            assert f"| `{op.name}` |" in page
            assert op.doc, f"{registry.role} op {op.name!r} has no description"
