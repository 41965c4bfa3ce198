"""The operator's pages stay true (issue 14 §7): every verb is in the README's command
table, the demo's length is announced the same way everywhere, and the docs cite nothing
outside the repository."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from fsguard_cli.cli import DEMO_LENGTH, build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]


def verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def commands_table() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Commands") :].split("\n## ", 1)[0]


def test_readme_command_table_lists_every_verb() -> None:
    table = commands_table()
    internal = {"worker"}  # started by the supervisor only
    for verb in set(verbs()) - internal:
        assert re.search(rf"`fsguard {re.escape(verb)}\b", table) or (
            verb in {"supervisor", "firewall", "api"} and "supervisor\\|firewall\\|api" in table
        ), f"README command table misses `fsguard {verb}`"
    for word in ("bans export", "bans import", "reconcile", "teardown", "reload"):
        assert word in table, word


def test_demo_length_is_announced_the_same_everywhere() -> None:
    help_text = " ".join(verbs()["demo"].format_help().split())
    assert DEMO_LENGTH in help_text
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"ends by itself in {DEMO_LENGTH}" in readme
    for doc in DOCS:
        text = " ".join(doc.read_text().split())
        assert "under a minute" not in text, doc


def test_docs_cite_nothing_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert "facts" not in text.lower().replace("artifacts", ""), f"{doc}: cites the facts file"
        assert "../shared" not in text and "/work/" not in text, doc
        assert not re.search(r"\[\d+\.\d+(\.\d+)?\]", text), f"{doc}: facts-style reference"
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
