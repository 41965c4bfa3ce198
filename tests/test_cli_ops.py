"""The operating verbs (status, bans, ban, unban, whitelist, top) against a running fsguard.

Real processes: the fake FreeSWITCH over TCP, `fsguard run` (supervisor, workers, firewall,
API) with security.dry_run (no kernel needed), and the CLI as a subprocess talking real
HTTP. `top` runs in a pseudo-terminal (stdlib pty) and its screen is checked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsguard_cli.simulator import register_failure
from tests.pty_helpers import in_pty, read_until
from tests.system_helpers import FSGUARD, fsguard_config, running_fsguard, wait_for

PHONE_UA = "Yealink SIP-T46S 66.86.0.15"
BRUTE = "203.0.113.7"
SCANNER = "203.0.113.8"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(tmp: Path, esl_port: int, api_port: int) -> dict[str, Any]:
    return fsguard_config(
        tmp, str(esl_port), set_name="fsg-ops", api_port=str(api_port),
        server={"log_requests": False},
        security={"dry_run": True, "max_failed_attempts": None,
                  "failed_attempts_window": None, "trusted_networks": None},
        logging={"level": "warning"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ops")
    api_port = _free_port()
    api = f"http://127.0.0.1:{api_port}"
    with running_fsguard(tmp, lambda port: _config(tmp, port, api_port)) as running:
        fake = running.fake
        assert wait_for(lambda: cli("status", "--api", api, "--interval", "0").returncode == 0,
                     20, 0.2), "API never answered"
        fake.send_events([register_failure(BRUTE, user="1000", user_agent=PHONE_UA)
                          for _ in range(6)])
        fake.send_events([register_failure(SCANNER, user="1000",
                                           user_agent="friendly-scanner")])
        yield {"api": api, "fake": fake, "config": str(running.config_path), "tmp": tmp}


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FSGUARD, *args], capture_output=True, text=True, timeout=timeout)


def _bans(api: str, *extra: str) -> dict[str, Any]:
    proc = cli("bans", "list", "--api", api, "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_rule_bans_listed_by_rule(system: dict[str, Any]) -> None:
    api = system["api"]
    assert wait_for(lambda: {BRUTE, SCANNER} <= set(_bans(api)), 10, 0.2)
    failed = _bans(api, "--rule", "failed_auth")
    assert set(failed) == {BRUTE}
    assert failed[BRUTE]["failCount"] == 5
    assert set(_bans(api, "--rule", "scanner_user_agent")) == {SCANNER}
    table = cli("bans", "--api", api)
    assert table.returncode == 0
    lines = [line for line in table.stdout.splitlines() if line.startswith(BRUTE)]
    assert len(lines) == 1 and "failed_auth" in lines[0]
    assert "Exceeded max failed registrations (5)" in lines[0]


def test_status_reports_connection_rate_and_bans(system: dict[str, Any]) -> None:
    api, fake = system["api"], system["fake"]
    assert wait_for(lambda: BRUTE in _bans(api), 10, 0.2)
    stop = threading.Event()

    def feed() -> None:  # ~200 events/s from a clean address during the two samples
        while not stop.is_set():
            fake.send_events([register_failure("203.0.113.99", user=f"{i}",
                                               user_agent=PHONE_UA) for i in range(1)] * 20)
            time.sleep(0.1)

    thread = threading.Thread(target=feed)
    thread.start()
    try:
        proc = cli("status", "--api", api, "--json", "--interval", "1")
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["esl"]["connected"] is True
    assert data["esl"]["port"] in (str(fake.port), fake.port)
    assert 50 < data["eventsPerSecond"] < 2000
    assert data["eventsDropped"] == 0
    assert data["workers"]["count"] == 2
    assert data["bansByRule"].get("failed_auth", 0) >= 1
    assert data["firewall"]["backend"] == "ipset"  # read from the firewall (dry run here)
    text = cli("status", "--api", api, "--interval", "0.2")
    assert text.returncode == 0
    assert "connected" in text.stdout and "events" in text.stdout
    assert "failed_auth" in text.stdout
    assert "firewall   ipset: ipset " in text.stdout


def test_manual_ban_and_unban(system: dict[str, Any]) -> None:
    api = system["api"]
    ip = "198.51.100.200"
    proc = cli("ban", ip, "--api", api, "--duration", "10m", "--reason", "seen in the logs")
    assert proc.returncode == 0, proc.stderr
    assert ip in proc.stdout
    bans = _bans(api)
    assert ip in bans and bans[ip]["reason"] == "seen in the logs"
    assert bans[ip]["rule"] == "manual"
    assert not bans[ip]["permanent"]
    proc = cli("unban", ip, "--api", api)
    assert proc.returncode == 0, proc.stderr
    assert ip not in _bans(api)


def test_whitelist_add_list_remove(system: dict[str, Any]) -> None:
    api = system["api"]
    ip = "198.51.100.201"
    proc = cli("whitelist", "add", ip, "--api", api, "--user", "1001", "--domain", "pbx.example")
    assert proc.returncode == 0, proc.stderr
    listed = cli("whitelist", "list", "--api", api, "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert entries[ip]["userId"] == "1001" and entries[ip]["domain"] == "pbx.example"
    table = cli("whitelist", "list", "--api", api)
    assert any(line.startswith(ip) for line in table.stdout.splitlines())
    assert cli("whitelist", "remove", ip, "--api", api).returncode == 0
    assert ip not in json.loads(cli("whitelist", "list", "--api", api, "--json").stdout)


def test_config_supplies_the_api_url(system: dict[str, Any]) -> None:
    proc = cli("bans", "--config", system["config"], "--json")
    assert proc.returncode == 0, proc.stderr
    assert BRUTE in json.loads(proc.stdout)


def test_exit_codes_unreachable_and_usage(system: dict[str, Any], tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    for args in (("status",), ("bans",), ("ban", "203.0.113.1"), ("unban", "203.0.113.1"),
                 ("whitelist", "list"), ("top",)):
        proc = cli(*args, "--api", dead)
        assert proc.returncode == 3, (args, proc.stderr)
        assert "unreachable" in proc.stderr
    assert cli("ban", "not-an-ip", "--api", system["api"]).returncode == 2
    assert cli("ban", "203.0.113.1", "--duration", "soon", "--api",
               system["api"]).returncode == 2
    assert cli("status", "--config", str(tmp_path / "missing.json")).returncode == 2
    assert cli("bans", "frobnicate").returncode == 2


# --- top in a pseudo-terminal --------------------------------------------------------------


@pytest.mark.parametrize("quit_key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_top_in_a_pty(system: dict[str, Any], quit_key: bytes) -> None:
    api = system["api"]
    assert wait_for(lambda: BRUTE in _bans(api), 10, 0.2)
    with in_pty([FSGUARD, "top", "--api", api]) as (proc, master, slave):
        # Two full redraws, however slow the machine: wait on the output, not on a clock.
        screen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            screen += read_until(master, proc, 0.5)
            redraws = screen.split(b"\x1b[H\x1b[2J")
            if len(redraws) >= 4 and b"friendly-scanner" in redraws[-2]:
                break
        text = screen.decode("utf-8", "replace")
        assert "\x1b[?1049h" in text  # alternate screen entered
        assert text.count("\x1b[H\x1b[2J") >= 2, "not redrawn every second"
        last = text.split("\x1b[H\x1b[2J")[-2]  # the last complete redraw
        assert "fsguard top" in last
        assert "events/s" in last and "bans/min" in last
        assert "TOP OFFENDING ADDRESSES" in last
        assert BRUTE in last and "failed_auth" in last
        assert "friendly-scanner" in last  # user agents of banned scanners
        attrs = termios.tcgetattr(slave)
        assert not attrs[3] & termios.ICANON, "stdin not in cbreak mode while running"
        os.write(master, quit_key)
        # Keep reading while it exits: a full pty buffer would block its last redraw and
        # the TCSADRAIN that restores the terminal (the old flake under load).
        tail = b""
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            tail += read_until(master, proc, 0.2)
        assert proc.wait(1) == 0
        tail += read_until(master, proc, 0.2)
        assert b"\x1b[?1049l" in screen + tail, "alternate screen not left"
        attrs = termios.tcgetattr(slave)
        assert attrs[3] & termios.ICANON and attrs[3] & termios.ECHO, "terminal not restored"


def test_untrusted_patterns_refuse_ban_everyone_and_broad_needs_force(
    system: dict[str, Any],
) -> None:
    """Issue 11 §2 through the CLI, the API and the real firewall."""
    api = system["api"]
    everyone = cli("untrusted", "add", "0.0.0.0/0", "--force", "--api", api)
    assert everyone.returncode != 0 and "covers every address" in everyone.stderr
    broad = cli("untrusted", "add", "64.0.0.0/4", "--api", api)
    assert broad.returncode != 0 and "force" in broad.stderr
    forced = cli("untrusted", "add", "64.0.0.0/4", "--force", "--api", api)
    assert forced.returncode == 0, forced.stderr
    listed = cli("untrusted", "list", "--api", api, "--json")
    assert "64.0.0.0/4" in json.loads(listed.stdout) and "0.0.0.0/0" not in listed.stdout
    assert cli("untrusted", "remove", "64.0.0.0/4", "--api", api).returncode == 0
