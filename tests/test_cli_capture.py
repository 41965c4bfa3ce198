"""`fsguard capture` against the fake FreeSWITCH over TCP, then `fsguard replay` of the file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsguard_cli.simulator import ThreadedFakeFreeSwitch, channel_create, register_failure
from fsguard_supervisor.esl_protocol import iter_capture_frames

FSGUARD = str(Path(sys.executable).parent / "fsguard")


def _config(tmp: Path, port: int, password: str = "ClueCon") -> Path:
    path = tmp / "config.json"
    path.write_text(json.dumps({"security": {"esl_host": "127.0.0.1", "esl_port": str(port),
                                             "esl_password": password}}))
    return path


@pytest.mark.parametrize("fmt", ["json", "plain"])
def test_capture_records_every_byte_and_replays(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"capture.{fmt}.bin"
    with ThreadedFakeFreeSwitch() as fake:
        cfg = _config(tmp_path, fake.port)
        proc = subprocess.Popen(
            [FSGUARD, "capture", "--out", str(out), "--format", fmt, "--duration", "2s",
             "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert fake.wait_for_subscription(10), "capture never subscribed"
            events = [register_failure("198.51.100.7", user="1000", user_agent="Yealink")
                      for _ in range(6)]
            events.append(channel_create("198.51.100.8"))
            assert fake.send_events(events) == 7
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert f"event {fmt} ALL" in fake.commands
        assert "exit" in fake.commands  # a clean goodbye at the end of --duration
    data = out.read_bytes()
    assert data.startswith(b"Content-Type: auth/request\n\n")
    frames = list(iter_capture_frames(data))  # whole file frames cleanly
    types = [f.content_type for f in frames]
    assert types[:3] == ["auth/request", "command/reply", "command/reply"]
    assert frames[2].header("Reply-Text") == f"+OK event listener enabled {fmt}"
    assert types.count(f"text/event-{fmt}") == 7
    assert types[-1] == "text/disconnect-notice"
    assert "wrote" in err and "7 events" in err

    replay = subprocess.run([FSGUARD, "replay", str(out), "--keep-ips", "--json"],
                            capture_output=True, text=True, timeout=30)
    assert replay.returncode == 0, replay.stderr
    report = json.loads(replay.stdout)
    assert report["events"] == 7
    assert [(b["ip"], b["rule"]) for b in report["bans"]] == [("198.51.100.7", "failed_auth")]


def test_capture_fails_cleanly(tmp_path: Path) -> None:
    with ThreadedFakeFreeSwitch() as fake:
        cfg = _config(tmp_path, fake.port, password="wrong")
        proc = subprocess.run([FSGUARD, "capture", "--out", str(tmp_path / "x.bin"),
                               "--config", str(cfg), "--duration", "1s"],
                              capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert "authentication refused" in proc.stderr or "refused the connection" in proc.stderr
    with ThreadedFakeFreeSwitch() as fake:
        port = fake.port
    time.sleep(0.1)
    cfg = _config(tmp_path, port)
    proc = subprocess.run([FSGUARD, "capture", "--out", str(tmp_path / "y.bin"),
                           "--config", str(cfg), "--duration", "1s"],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr
