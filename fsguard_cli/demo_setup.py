"""`fsguard demo`'s parts: the story of the capture's phases, the narrator, the config it
writes and the processes it starts and stops (demo.py runs them)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .netns import socket_in
from .ops_client import SocketFactory
from .output import Style

SET_NAME = "fsg-demo"

# What each phase of the capture is (shared/reference/freeswitch-real-events.md).
PHASE_STORY: dict[str, tuple[str, bool]] = {  # prefix -> (description, expect a ban)
    "a": ("SIPp: 5 REGISTERs for 1000 with a wrong password (brute force)", True),
    "b": ("SIPp: 3 REGISTERs for non-existent user 9876 (below the threshold)", False),
    "c": ("a phone registers 1001 with the right password", False),
    "d1": ("3 INVITEs without credentials, abandoned", False),
    "d2": ("3 INVITEs with a wrong password (below the threshold)", False),
    "d3": ("1 INVITE as non-existent user 7777", False),
    "e": ("1001 places an authenticated call to 9999", False),
    "h1": ("sipcli/v1.8 on the external profile dials 011972599999999 (toll fraud)", True),
    "h2": ("sipcli/v1.8 on the external profile calls extension 1000", True),
    "f1": ("SIPVicious svwar scans extensions with REGISTER", True),
    "f1b": ("SIPVicious svwar with OPTIONS (invisible in ESL)", False),
    "f2": ("SIPVicious svwar scans extensions with INVITE", True),
    "f3": ("SIPVicious svcrack cracks 1000's password (9 tries)", True),
    "g1": ("SIPVicious svmap OPTIONS sweep (invisible in ESL)", False),
    "g2": ("SIPp OPTIONS pings (invisible in ESL)", False),
    "c2": ("the phone unregisters 1001", False),
}


class DemoFailed(Exception):
    pass


@dataclass
class Expectation:
    ip: str
    label: str
    banned: bool


class Narrator:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.st = Style.for_stream(out)
        self.t0 = time.monotonic()

    def say(self, text: str, *styles: str) -> None:
        stamp = self.st(f"[{time.monotonic() - self.t0:5.1f}s]", "dim")
        self.out.write(f"{stamp} {self.st(text, *styles)}\n")
        self.out.flush()

    def detail(self, text: str) -> None:
        self.out.write(f"         {text}\n")
        self.out.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(tmp: Path, esl_port: int, api_port: int, dry_run: bool) -> Path:
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": str(api_port), "log_requests": False},
        "security": {
            "esl_host": "127.0.0.1",
            "esl_port": str(esl_port),
            "esl_password": "ClueCon",
            "ipset_name": SET_NAME,
            "dry_run": dry_run,
            "reconnect_backoff": "100ms",
        },
        "paths": {"runtime_dir": str(tmp / "run"), "state_dir": str(tmp / "state")},
        "workers": {"count": 2},
        "logging": {"format": "human", "level": "warning"},
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def netns_factory(ns: str) -> SocketFactory:
    def factory(host: str, port: int, timeout: float) -> socket.socket:
        sock = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        return sock

    return factory


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: the whole tree
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of our session, if any


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
