"""Every verb answers --help (exit 0, its own usage line, the exit codes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fsguard_cli.cli import EXIT_CODES, main

VERBS = [
    ["run"], ["supervisor"], ["firewall"], ["api"], ["worker"], ["check-config"],
    ["status"], ["bans"], ["ban"], ["unban"], ["whitelist"], ["whitelist", "list"],
    ["whitelist", "add"], ["whitelist", "remove"], ["top"], ["replay"], ["capture"], ["demo"],
]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_help(verb: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fsguard {' '.join(verb)}")
    assert " ".join(EXIT_CODES.split()) in " ".join(out.split())


def test_top_level_help_lists_every_verb() -> None:
    fsguard = str(Path(sys.executable).parent / "fsguard")
    proc = subprocess.run([fsguard, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for verb in {v[0] for v in VERBS} - {"worker"}:
        assert verb in proc.stdout, verb
    assert "3 REST API unreachable" in " ".join(proc.stdout.split())
    assert "fsguard demo" in proc.stdout


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-verb"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["replay"])  # missing CAPTURE
    assert exc.value.code == 2
