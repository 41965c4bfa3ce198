"""`fsguard replay`: the real engine over the real captures, offline, via the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fsguard_cli.simulator import register_failure
from fsguard_supervisor.esl_protocol import encode_frame, event_frame, iter_capture_frames

FIXTURES = Path(__file__).parent / "fixtures"
FSGUARD = str(Path(sys.executable).parent / "fsguard")
CAPTURES = [("capture_json.bin", "phases_json.txt"), ("capture_plain.bin", "phases_plain.txt")]


def fsguard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FSGUARD, *args], capture_output=True, text=True, timeout=timeout)


def phase_ips(phases_file: str) -> dict[str, str]:
    """Phase prefix (a, b, c, d1, ...) -> its documented address 203.0.113.<n>."""
    out: dict[str, str] = {}
    for line in (FIXTURES / phases_file).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "BEGIN":
            out[parts[2].split("_", 1)[0]] = f"203.0.113.{len(out) + 1}"
    return out


def bans_by_ip(report: dict[str, Any]) -> dict[str, list[str]]:
    by_ip: dict[str, list[str]] = {}
    for ban in report["bans"]:
        by_ip.setdefault(ban["ip"], []).append(ban["rule"])
    return by_ip


@pytest.mark.parametrize(("capture", "phases"), CAPTURES)
def test_per_phase_bans_sipvicious_not_the_legitimate_traffic(capture: str, phases: str) -> None:
    proc = fsguard("replay", str(FIXTURES / capture), "--per-phase", str(FIXTURES / phases),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["error"] is None
    ips = phase_ips(phases)
    by_ip = bans_by_ip(report)
    for phase in ("f1", "f2", "f3"):  # SIPVicious
        assert by_ip.get(ips[phase]) == ["scanner_user_agent"], phase
    assert by_ip.get(ips["a"]) == ["failed_auth"]  # 5 wrong passwords
    assert by_ip.get(ips["h1"]) == ["toll_fraud"]
    assert by_ip.get(ips["h2"]) == ["scanner_user_agent"]
    for phase in ("c", "e", "c2", "b", "d1", "d2", "d3", "g2"):  # legit or below threshold
        assert ips[phase] not in by_ip, phase
    assert len(by_ip) == 6
    # which event triggered each ban: svcrack is banned at its very first event
    f3 = next(b for b in report["bans"] if b["ip"] == ips["f3"])
    assert f3["event"] == "sofia::pre_register"
    assert f3["phase"].startswith("f3_")
    assert f3["event_sequence"].isdigit()
    a = next(b for b in report["bans"] if b["ip"] == ips["a"])
    assert a["event"] == "sofia::register_failure" and a["evidence_count"] == 5
    # the legitimate call of phase e was not killed; the toll-fraud call was
    assert [k["reason"] for k in report["kills"]].count("toll-fraud") == 1
    summary = report["summary"]
    assert summary["events_by_type"]["sofia::register_failure"] == 20
    assert summary["decisions_by_rule"] == {"scanner_user_agent": 4, "failed_auth": 1,
                                            "toll_fraud": 1}
    assert summary["events_per_second"] > 0  # measured, not asserted: make bench owns figures
    assert summary["engine"]["decode_errors"] == 0
    assert report["formats"] == {capture.split("_")[1].split(".")[0]: report["events"]}


def test_text_report_default_rewrite() -> None:
    proc = fsguard("replay", str(FIXTURES / "capture_json.bin"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # everything from one address: banned once, by the first rule that fires (phase a)
    assert "BAN  203.0.113.50  rule failed_auth  after event #15 sofia::register_failure" in out
    assert "every source rewritten to 203.0.113.50" in out
    assert "EVENT TYPE" in out and "RULE" in out and "events/s" in out
    assert "\x1b[" not in out  # no colours when not a TTY


def test_keep_ips_loopback_is_trusted() -> None:
    proc = fsguard("replay", str(FIXTURES / "capture_plain.bin"), "--keep-ips", "--json")
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert report["bans"] == []
    assert report["summary"]["engine"]["trusted_skipped"] > 50


def _frame_starts(data: bytes) -> list[int]:
    starts, pos = [], 0
    for frame in iter_capture_frames(data):
        starts.append(pos)
        pos += len(frame._raw) + 2 + len(frame.body)
    return starts


def test_truncated_capture_partial_results_and_offset(tmp_path: Path) -> None:
    data = (FIXTURES / "capture_json.bin").read_bytes()
    cut = data.index(b'"Event-Subclass":"sofia::pre_register"',
                     data.index(b"friendly-scanner")) + 10  # inside an f-phase body
    frame_start = data.rindex(b"Content-Length: ", 0, cut)
    path = tmp_path / "truncated.bin"
    path.write_bytes(data[:cut])
    proc = fsguard("replay", str(path), "--per-phase", str(FIXTURES / "phases_json.txt"),
                   "--json")
    assert proc.returncode == 1
    assert f"byte offset {frame_start}" in proc.stderr
    assert "truncated" in proc.stderr
    report = json.loads(proc.stdout)  # partial results still printed
    assert report["error"]["offset"] == frame_start
    by_ip = bans_by_ip(report)
    assert by_ip[phase_ips("phases_json.txt")["a"]] == ["failed_auth"]
    assert 0 < report["events"] < 331


def test_corrupted_capture_names_the_offset(tmp_path: Path) -> None:
    data = (FIXTURES / "capture_plain.bin").read_bytes()
    target = data.index(b"Content-Length: ", len(data) // 2)
    end = data.index(b"\n", target)
    corrupted = data[:target] + b"Content-Length: 12x4" + data[end:]
    path = tmp_path / "corrupted.bin"
    path.write_bytes(corrupted)
    proc = fsguard("replay", str(path), "--per-phase", str(FIXTURES / "phases_plain.txt"))
    assert proc.returncode == 1
    assert f"byte offset {target}" in proc.stderr
    assert "Content-Length" in proc.stderr
    assert "BAN  203.0.113.1  rule failed_auth" in proc.stdout  # partial results
    assert "would ban" in proc.stdout


def _synthetic_capture(path: Path, gap_seconds: float, count: int = 5) -> None:
    """`count` failed registrations from one address, `gap_seconds` apart (capture time)."""
    start = 1_795_567_800_000_000
    frames = [b"Content-Type: auth/request\n\n"]
    for i in range(count):
        headers = [(k, str(start + int(i * gap_seconds * 1e6)) if k == "Event-Date-Timestamp"
                    else v) for k, v in register_failure("198.51.100.77", user="1000",
                                                         user_agent="Yealink SIP-T46S")]
        frames.append(event_frame("json", headers))
    frames.append(encode_frame("text/disconnect-notice", b"bye\n"))
    path.write_bytes(b"".join(frames))


def test_engine_clock_follows_the_capture_timestamps(tmp_path: Path) -> None:
    """5 failures 4 minutes apart span 16 min > the 10 min window: no ban, even flat out."""
    slow, fast = tmp_path / "slow.bin", tmp_path / "fast.bin"
    _synthetic_capture(slow, 240.0)
    _synthetic_capture(fast, 30.0)
    slow_report = json.loads(fsguard("replay", str(slow), "--keep-ips", "--json").stdout)
    fast_report = json.loads(fsguard("replay", str(fast), "--keep-ips", "--json").stdout)
    assert slow_report["bans"] == []
    assert [b["ip"] for b in fast_report["bans"]] == ["198.51.100.77"]
    assert fast_report["bans"][0]["event_number"] == 5


def test_speed_honours_recorded_gaps(tmp_path: Path) -> None:
    path = tmp_path / "paced.bin"
    _synthetic_capture(path, 30.0)  # spans 120 s of capture time
    started = time.monotonic()
    proc = fsguard("replay", str(path), "--keep-ips", "--speed", "100", "--json")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0
    assert elapsed >= 1.2  # 120 s / 100
    report = json.loads(proc.stdout)
    assert [b["ip"] for b in report["bans"]] == ["198.51.100.77"]
    assert report["summary"]["capture_span_seconds"] == 120.0


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert fsguard("replay", str(tmp_path / "missing.bin")).returncode == 2
    assert fsguard("replay", str(FIXTURES / "capture_json.bin"), "--speed", "0").returncode == 2
    assert fsguard("replay", str(FIXTURES / "capture_json.bin"), "--rewrite-ip",
                   "not-an-ip").returncode == 2
    proc = fsguard("replay", str(FIXTURES / "capture_json.bin"), "--per-phase",
                   str(tmp_path / "nope.txt"))
    assert proc.returncode == 2 and "nope.txt" in proc.stderr


def test_progress_bar_on_a_tty_stderr_only(tmp_path: Path) -> None:
    import os
    import select

    data = (FIXTURES / "capture_json.bin").read_bytes()
    first, last = data.index(b"Content-Length:"), data.rindex(b"Content-Type: text/disconnect")
    path = tmp_path / "long.bin"
    path.write_bytes(data[:first] + data[first:last] * 10)  # 3310 events
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([FSGUARD, "replay", str(path), "--json"], stdin=slave,
                                stdout=subprocess.PIPE, stderr=slave)
        stdout, _ = proc.communicate(timeout=60)
        err = b""
        while select.select([master], [], [], 0.2)[0]:
            err += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0
    assert b"replay [" in err and b"/3310" in err and err.endswith(b"\r\x1b[K")
    assert json.loads(stdout)["events"] == 3310  # stdout untouched by the bar
