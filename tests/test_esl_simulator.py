"""The fake FreeSWITCH speaks the real wire protocol (raw sockets, byte-exact replies)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fsguard_cli.simulator import (
    FakeFreeSwitch,
    Headers,
    ThreadedFakeFreeSwitch,
    channel_create,
    heartbeat,
    pre_register,
    register_attempt,
    register_failure,
    wrong_call_state,
)
from fsguard_supervisor.esl_protocol import Frame, FrameParser, parse_plain_event

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


class RawClient:
    """A blocking ESL client on a plain socket, for byte-level checks."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.parser = FrameParser()
        self.frames: list[Frame] = []
        self.raw = b""

    def send(self, command: str) -> None:
        self.sock.sendall(command.encode() + b"\n\n")

    def read_frames(self, count: int) -> list[Frame]:
        while len(self.frames) < count:
            data = self.sock.recv(65536)
            if not data:
                break
            self.raw += data
            self.frames += self.parser.feed(data)
        out, self.frames = self.frames[:count], self.frames[count:]
        return out

    def read_until_closed(self) -> bytes:
        while True:
            data = self.sock.recv(65536)
            if not data:
                return self.raw
            self.raw += data

    def login(self, subscribe: str | None = None) -> None:
        self.read_frames(1)
        self.send("auth ClueCon")
        assert self.read_frames(1)[0].header("Reply-Text") == "+OK accepted"
        if subscribe:
            self.send(subscribe)
            assert (self.read_frames(1)[0].header("Reply-Text") or "").startswith("+OK event")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[ThreadedFakeFreeSwitch]:
    with ThreadedFakeFreeSwitch(FakeFreeSwitch(api_responses={"status": "UP\n"})) as sim:
        yield sim


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_handshake_bytes_match_freeswitch(fake: ThreadedFakeFreeSwitch) -> None:
    c = RawClient(fake.port)
    assert c.read_frames(1)[0].content_type == "auth/request"
    assert c.raw == fixture_bytes("auth_request.txt")
    c.send("auth ClueCon")
    c.read_frames(1)
    assert c.raw[28:] == fixture_bytes("auth_ok.txt")
    c.send("event plain ALL")
    c.read_frames(1)
    assert c.raw[28 + 54 :] == fixture_bytes("event_reply.txt")
    mark = len(c.raw)
    c.send("api bogus")
    c.read_frames(1)
    assert c.raw[mark:] == fixture_bytes("api_response_not_found.txt")
    mark = len(c.raw)
    c.send("filter Event-Subclass sofia::register_failure")
    c.read_frames(1)
    assert c.raw[mark:] == fixture_bytes("filter_reply.txt")
    mark = len(c.raw)
    c.send("exit")
    assert c.read_until_closed()[mark:] == fixture_bytes("exit_reply.txt")
    assert fake.commands[0] == "auth ********"


def test_wrong_password_and_acl_rejection_bytes() -> None:
    with ThreadedFakeFreeSwitch(FakeFreeSwitch(password="other")) as sim:
        c = RawClient(sim.port)
        c.read_frames(1)
        c.send("auth ClueCon")
        assert c.read_until_closed()[28:] == fixture_bytes("auth_invalid.txt")
        assert sim.commands == ["auth ********"]
        assert not any("ClueCon" in cmd for cmd in sim.commands)
    with ThreadedFakeFreeSwitch(FakeFreeSwitch(acl_reject=True)) as sim:
        c = RawClient(sim.port)
        assert c.read_until_closed() == fixture_bytes("rude_rejection.txt")


def test_commands_before_auth_and_uuid_kill_without_api(fake: ThreadedFakeFreeSwitch) -> None:
    c = RawClient(fake.port)
    c.read_frames(1)
    c.send("event json ALL")
    assert c.read_frames(1)[0].header("Reply-Text") == "-ERR command not found"
    c.send("auth ClueCon")
    assert c.read_frames(1)[0].header("Reply-Text") == "+OK accepted"
    c.send("uuid_kill 5f1e8a2c-3b4d-4e6f-8a9b-0c1d2e3f4a5b")
    assert c.read_frames(1)[0].header("Reply-Text") == "-ERR command not found"
    c.send("api uuid_kill 5f1e8a2c-3b4d-4e6f-8a9b-0c1d2e3f4a5b")
    assert c.read_frames(1)[0].body == b"-ERR No such channel!\n"
    c.send("event")
    assert c.read_frames(1)[0].header("Reply-Text") == "-ERR no keywords supplied"
    c.send("api status")
    assert c.read_frames(1)[0].body == b"UP\n"
    c.close()


def test_subscription_filtering_and_custom_token_order(fake: ThreadedFakeFreeSwitch) -> None:
    a = RawClient(fake.port)
    a.login("event plain HEARTBEAT CUSTOM sofia::register_failure")
    b = RawClient(fake.port)  # CHANNEL_CREATE after CUSTOM is a subclass name: never delivered
    b.login("event json CUSTOM sofia::pre_register CHANNEL_CREATE")
    c = RawClient(fake.port)
    c.login("event json CUSTOM")  # bare CUSTOM: no sofia events
    events = [register_failure("203.0.113.1"), pre_register("203.0.113.2"),
              channel_create("203.0.113.3"), heartbeat(), wrong_call_state("203.0.113.4")]
    assert fake.send_events(events) == 3
    fa = a.read_frames(2)
    assert [f.content_type for f in fa] == ["text/event-plain"] * 2
    names = [dict(parse_plain_event(f.body)[0])["Event-Name"] for f in fa]
    assert names == ["CUSTOM", "HEARTBEAT"]
    fb = b.read_frames(1)
    assert json.loads(fb[0].body)["Event-Subclass"] == "sofia::pre_register"
    # the next thing c and b get is a marker event everyone subscribed to gets
    fake.send_event(register_failure("203.0.113.9"))  # only a
    fake.send_event(pre_register("203.0.113.10"))  # only b
    assert json.loads(b.read_frames(1)[0].body)["network-ip"] == "203.0.113.10"
    c.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        c.sock.recv(1)
    for client in (a, b, c):
        client.close()


def test_event_wire_format(fake: ThreadedFakeFreeSwitch) -> None:
    p = RawClient(fake.port)
    p.login("event plain ALL")
    j = RawClient(fake.port)
    j.login("event json ALL")
    ev = register_failure("2001:db8::77", user="10 01", user_agent="evil\nUA %41")
    fake.send_event(ev)
    fake.send_event(heartbeat(), b"body\n\nwith blank line")
    pf = p.read_frames(2)
    jf = j.read_frames(2)
    assert p.raw.split(b"\n\n")[-4].startswith(b"Content-Length: ")  # length first
    assert b"\nnetwork-ip: 2001%3Adb8%3A%3A77\n" in pf[0].body
    assert b"\nuser-agent: evil%0AUA%20%41\n" in pf[0].body
    assert pf[0].body.startswith(
        b"Event-Subclass: sofia%3A%3Aregister_failure\nEvent-Name: CUSTOM\n")
    assert pf[0].body.endswith(b"registration-type: REGISTER\n\n")
    headers, inner = parse_plain_event(pf[1].body)
    assert inner == b"body\n\nwith blank line" and headers[-1] == ("Content-Length", "21")
    assert jf[0].body.startswith(b'{"Event-Subclass":"sofia::register_failure"')
    assert jf[0].body.endswith(b'"registration-type":"REGISTER"}')
    pairs = json.loads(jf[0].body, object_pairs_hook=list)
    assert [k for k, _ in pairs].count("profile-name") == 2
    assert json.loads(jf[1].body)["_body"] == "body\n\nwith blank line"


def _names(headers: list[tuple[str, str]]) -> list[str]:
    return [k for k, _ in headers]


@pytest.mark.parametrize(("builder", "sample"), [
    (lambda: register_failure("203.0.113.45"), "register_failure.txt"),
    (lambda: pre_register("203.0.113.45"), "pre_register.txt"),
    (lambda: register_attempt("203.0.113.45"), "register_attempt.txt"),
    (lambda: wrong_call_state("203.0.113.45"), "wrong_call_state.txt"),
])
def test_builders_follow_the_real_header_order(
    builder: Callable[[], Headers], sample: str
) -> None:
    frame = FrameParser().feed(fixture_bytes(sample))[0]
    expected, _ = parse_plain_event(frame.body)
    got = builder()
    assert _names(got) == _names(expected)
    assert dict(got).get("network-ip", dict(got).get("network_ip")) == "203.0.113.45"


def test_bgapi_reply_and_background_job(fake: ThreadedFakeFreeSwitch) -> None:
    c = RawClient(fake.port)
    c.login("event json BACKGROUND_JOB")
    c.sock.sendall(b"bgapi status\nJob-UUID: 11111111-2222-3333-4444-555555555555\n\n")
    reply, job = c.read_frames(2)
    assert reply.header("Reply-Text") == "+OK Job-UUID: 11111111-2222-3333-4444-555555555555"
    assert reply.header("Job-UUID") == "11111111-2222-3333-4444-555555555555"
    body = json.loads(job.body)
    assert body["Event-Name"] == "BACKGROUND_JOB" and body["_body"] == "UP\n"
    assert body["Job-Command"] == "status"
    c.close()


def test_replay_plain_subscriber_gets_converted_and_rewritten(
    fake: ThreadedFakeFreeSwitch,
) -> None:
    c = RawClient(fake.port)
    c.login("event plain CUSTOM sofia::register_failure")
    sent = fake.replay(FIXTURES / "capture_json.bin",
                       rewrite_ip={"127.0.0.1": "198.51.100.9"})
    assert sent == 20  # register_failure events in the json capture
    frames = c.read_frames(sent)
    assert {f.content_type for f in frames} == {"text/event-plain"}
    ips = {dict(parse_plain_event(f.body)[0])["network-ip"] for f in frames}
    assert ips == {"198.51.100.9"}


def test_kill_silence_and_counters(fake: ThreadedFakeFreeSwitch) -> None:
    c = RawClient(fake.port)
    c.login("event json ALL")
    assert fake.wait_for_client(2) and fake.wait_for_subscription(2)
    assert fake.connected_clients == 1
    fake.go_silent()
    assert fake.send_event(heartbeat()) == 0
    fake.kill_connections()
    assert c.read_until_closed().endswith(b"enabled json\n\n")
    assert fake.wait_for_subscription(0.2, count=2) is False


def test_command_line_entry_point(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsguard_cli.simulator", "--port", "0", "--password", "pw",
         "--replay", str(FIXTURES / "capture_plain.bin"), "--rewrite-ip", "192.0.2.55"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        port = int(line.rsplit(":", 1)[1])
        c = RawClient(port)
        c.read_frames(1)
        c.send("auth pw")
        c.read_frames(1)
        c.send("event json CUSTOM sofia::wrong_call_state")
        c.read_frames(1)
        frames = c.read_frames(3)
        assert {json.loads(f.body)["network_ip"] for f in frames} == {"192.0.2.55"}
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0
