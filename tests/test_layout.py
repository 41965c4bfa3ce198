"""One package per role: no role imports another role's package (issue 17).

The imports of every module are read with `ast` (absolute and relative, at module level
and inside functions, TYPE_CHECKING blocks included) and checked against the layout:

- a role package (`fsguard_*` other than `fsguard_cli`) imports only itself and `shared`;
- `shared` imports only `shared`, except the role entry point `shared/roles.py`, which
  imports each role's `process` module (lazily, for the one role it runs);
- `fsguard_cli` (the operator's commands, demo, simulator) may import any package.

Operator verbs live in `fsguard_cli`: a role package has no `*_cli.py` module and does not
parse command lines (argparse; the roles' entry point is shared/roles.py).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = "fsguard_cli"
SHARED = "shared"
NON_PRODUCT = ("tests", "bench")
ENTRY_POINT = Path(SHARED) / "roles.py"


def packages(root: Path) -> list[str]:
    """Top-level product packages: `shared` and every `fsguard_*` directory with code."""
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and (p.name == SHARED or p.name.startswith("fsguard_"))
        and (p / "__init__.py").exists()
    )


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    package = path.relative_to(root).parts[:-1]  # the package holding the module
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from pkg import module` imports pkg.module too
                yield node.lineno, f"{module}.{alias.name}"


def violations(root: Path) -> list[str]:
    """Every import of another role's package (or of tests/bench) by product code."""
    found: list[str] = []
    first_party = {*packages(root), *NON_PRODUCT}
    for package in packages(root):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            for line, module in imports(path, root):
                top = module.split(".")[0]
                if top not in first_party or top in (package, SHARED):
                    continue
                if package == CLI and top not in NON_PRODUCT:
                    continue  # the operator's commands drive every role
                if (package == SHARED and rel == ENTRY_POINT and top != CLI
                        and f"{module}.".startswith(f"{top}.process.")):
                    continue  # the entry point starts each role's main loop
                found.append(f"{rel}:{line} imports {module}")
    return sorted(set(found))


def operator_code(root: Path) -> list[str]:
    """Modules of role packages that look like operator verbs (they belong in fsguard_cli)."""
    found: list[str] = []
    for package in packages(root):
        if package in (CLI, SHARED):
            continue
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if path.name.endswith("_cli.py"):
                found.append(f"{rel}: an operator-verb module")
            found += [f"{rel}:{line} imports argparse" for line, module in imports(path, root)
                      if module == "argparse"]
    return found


def test_operator_verbs_live_in_fsguard_cli() -> None:
    assert operator_code(ROOT) == []


def test_no_role_imports_another_roles_package() -> None:
    found = violations(ROOT)
    assert found == [], "cross-role imports (move what two roles need to shared/):\n" + "\n".join(
        found)


def test_the_layout_has_its_packages() -> None:
    names = packages(ROOT)
    for expected in (SHARED, CLI, "fsguard_supervisor", "fsguard_workers", "fsguard_firewall",
                     "fsguard_api"):
        assert expected in names
    # The operator's commands left the supervisor's package; the test helpers left shared/.
    for moved in ("cli.py", "demo.py", "replay.py", "capture.py", "top.py", "netns.py"):
        assert not (ROOT / "fsguard_supervisor" / moved).exists(), moved
        assert (ROOT / CLI / moved).exists(), moved
    assert not (ROOT / SHARED / "esl_simulator.py").exists()


def test_the_check_catches_cross_role_imports(tmp_path: Path) -> None:
    """The walker finds absolute, relative-beyond-package, lazy and TYPE_CHECKING imports."""
    files = {
        "shared/__init__.py": "",
        "shared/roles.py": "def run():\n    from fsguard_a.process import main\n",
        "shared/bad.py": "import fsguard_a.engine\n",
        "fsguard_a/__init__.py": "",
        "fsguard_a/process.py": "from shared import roles\nfrom . import engine\n",
        "fsguard_a/engine.py": "def f():\n    from fsguard_b.rules import Matcher\n",
        "fsguard_b/__init__.py": "",
        "fsguard_b/rules.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from fsguard_a import engine\n"
            "from tests.helpers import x\n"
        ),
        "fsguard_b/sub/__init__.py": "",
        "fsguard_b/sub/deep.py": "from ...fsguard_a import engine\nfrom .. import rules\n",
        "fsguard_cli/__init__.py": "",
        "fsguard_cli/cli.py": "from fsguard_a.process import main\nfrom fsguard_b import rules\n",
        "fsguard_a/teardown_cli.py": "def register():\n    import argparse\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        "fsguard_a/engine.py:2 imports fsguard_b.rules",
        "fsguard_a/engine.py:2 imports fsguard_b.rules.Matcher",
        "fsguard_b/rules.py:3 imports fsguard_a",
        "fsguard_b/rules.py:3 imports fsguard_a.engine",
        "fsguard_b/rules.py:4 imports tests.helpers",
        "fsguard_b/rules.py:4 imports tests.helpers.x",
        "fsguard_b/sub/deep.py:1 imports fsguard_a",
        "fsguard_b/sub/deep.py:1 imports fsguard_a.engine",
        "shared/bad.py:1 imports fsguard_a.engine",
    ]
    assert operator_code(tmp_path) == [
        "fsguard_a/teardown_cli.py: an operator-verb module",
        "fsguard_a/teardown_cli.py:2 imports argparse",
    ]
