"""Small things an operator meets first (issue 14 §5): --version, closed pipes, flag errors,
help texts, the log format on a terminal and Ctrl-C on `fsguard run`.

Real processes throughout: the CLI as a subprocess, `fsguard run` (dry_run: no kernel) against
the fake FreeSWITCH over TCP, in a pseudo-terminal where the case is about a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fsguard_cli.cli import EXIT_CODES, build_parser
from fsguard_cli.cli_util import EXIT_BROKEN_PIPE, version
from fsguard_cli.simulator import ThreadedFakeFreeSwitch
from tests.pty_helpers import in_pty, read_until
from tests.system_helpers import FSGUARD, fsguard_config, running_fsguard, wait_for
from tests.test_cli_ops import _free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "config.example.json")


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FSGUARD, *args], capture_output=True, text=True, timeout=30, **kw)


def closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout a pipe whose reader is already gone (`| head` that quit)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([FSGUARD, *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=30, check=False)  # fmt: skip
    finally:
        os.close(write_end)


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"fsguard {version()}"


def test_check_config_into_a_closed_pipe_ends_quietly() -> None:
    done = closed_pipe_run("check-config", EXAMPLE)
    assert done.returncode == EXIT_BROKEN_PIPE, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_ban_duration_error_names_the_flag() -> None:
    done = cli("ban", "203.0.113.1", "--duration", "2hours", "--api", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "--duration: invalid value '2hours'" in done.stderr, done.stderr
    assert "config key" not in done.stderr


def test_check_config_refuses_two_files(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text("{}")
    done = cli("check-config", "--config", EXAMPLE, str(other))
    assert done.returncode == 2
    assert "two config files given" in done.stderr, done.stderr
    assert done.stdout == ""  # nothing was checked
    assert cli("check-config", "--config", EXAMPLE).returncode == 0
    assert cli("check-config", EXAMPLE, "--config", EXAMPLE).returncode == 0  # same file


def _parsers(parser: argparse.ArgumentParser, name: str = "fsguard") -> Iterator[tuple[str, Any]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, child in action.choices.items():
                yield from _parsers(child, f"{name} {verb}")


def test_every_help_gives_defaults_and_exit_codes() -> None:
    for name, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        assert " ".join(EXIT_CODES.split()) in text, f"{name}: no exit codes"
        for action in parser._actions:
            if not action.option_strings or not action.help or action.help == "==SUPPRESS==":
                continue
            if action.default in (None, False, "", argparse.SUPPRESS):
                continue
            flag = action.option_strings[-1]
            pattern = re.escape(flag) + r"\b.*?default"
            assert re.search(pattern, text), f"{name} {flag}: default {action.default!r} not shown"


# --- `fsguard run` on a terminal and off it -------------------------------------------------


def _tree_config(tmp: Path, esl_port: int, api_port: int) -> dict[str, Any]:
    cfg = fsguard_config(tmp, esl_port, set_name="fsg-op", api_port=api_port,
                         security={"dry_run": True})  # fmt: skip
    del cfg["logging"]  # the default format: auto
    return cfg


def test_run_on_a_terminal_logs_human_and_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    fake = ThreadedFakeFreeSwitch()
    fake.start()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_tree_config(tmp_path, fake.port, _free_port())))
    try:
        with in_pty([FSGUARD, "run", "--config", str(config)]) as (proc, master, _):
            assert fake.wait_for_subscription(20), "never subscribed"
            out = read_until(master, proc, 20, needle=b"Application startup complete")
            os.write(master, b"\x03")  # Ctrl-C: SIGINT to the whole foreground process group
            assert proc.wait(20) == 0
            out += read_until(master, proc, 1.0)
    finally:
        fake.stop()
    text = out.decode("utf-8", "replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and ln.strip() != "^C"]
    assert lines and not any(ln.lstrip().startswith("{") for ln in lines), text[-3000:]
    assert re.search(r"^\S+Z INFO \[api \d+\] uvicorn.error: Uvicorn running on", text, re.M)
    assert "color_message" not in text and "\x1b[" not in text
    assert " ERROR " not in text and "Traceback" not in text and "CancelledError" not in text, (
        text[-3000:]
    )


def test_run_off_a_terminal_logs_json_without_color_message(tmp_path: Path) -> None:
    api_port = _free_port()
    with running_fsguard(tmp_path, lambda port: _tree_config(tmp_path, port, api_port)) as rs:
        assert wait_for(lambda: b"Uvicorn running" in rs.log_path.read_bytes(), 20)
        lines = [ln for ln in rs.log_path.read_text().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is a JSON object
    uvicorn = [r for r in records if r["logger"] == "uvicorn.error"]
    assert uvicorn and not any("color_message" in r for r in uvicorn)


def test_top_and_bans_into_a_closed_pipe_end_quietly(tmp_path: Path) -> None:
    api_port = _free_port()
    api = f"http://127.0.0.1:{api_port}"
    with running_fsguard(tmp_path, lambda port: _tree_config(tmp_path, port, api_port)):
        assert wait_for(lambda: cli("bans", "--api", api).returncode == 0, 20, 0.2)
        for args in (("top", "--api", api), ("bans", "--api", api, "--json")):
            done = closed_pipe_run(*args)
            assert done.returncode == EXIT_BROKEN_PIPE, (args, done.stderr)
            assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
