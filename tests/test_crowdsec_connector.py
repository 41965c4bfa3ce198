"""The fleet connector against a misbehaving LAPI, with the real firewall process behind
it: garbage, 401 and a hanging LAPI never crash it, never lose an outbox item, never
slow local banning; alerts queued fast go out in one batch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from fsguard_fleet.process import Connector
from shared import addresses
from shared.config import load_config
from shared.messages import encode
from shared.ops import firewall as fwo
from shared.ops.base import Empty
from tests.firewall_helpers import Proc, decision, launch, stop, wait_for, write_config
from tests.lapi_stubs import BadServer, FakeLapi, http_reply
from tests.netns_helpers import netns, requires_netns
from tests.test_crowdsec_firewall import CROWDSEC, outbox

pytestmark = [pytest.mark.netns, requires_netns]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Proc, Path]]:
    with netns("fwcc") as ns:
        config, runtime = write_config(tmp_path, crowdsec={**CROWDSEC, "timeout": "500ms"})
        proc = launch(ns, config, runtime)
        try:
            yield proc, config
        finally:
            stop(proc.popen)


def connector(config: Path, port: int) -> Connector:
    cfg = load_config(str(config), env={})
    cfg.security.crowdsec.lapi_url = f"http://127.0.0.1:{port}"
    return Connector(cfg)


def ban(proc: Proc, ips: list[str]) -> None:
    push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(addresses.firewall_decisions(proc.runtime))
    try:
        for n, ip in enumerate(ips):
            push.send(encode(decision(f"w0-9-{ip}-{n}", ip, duration=600)))
    finally:
        push.close()


def test_fast_bans_are_pushed_in_one_batch(node: tuple[Proc, Path]) -> None:
    proc, config = node
    lapi = FakeLapi()
    try:
        ips = [f"203.0.113.{i}" for i in range(1, 51)]
        ban(proc, ips)
        wait_for(lambda: len(outbox(proc)) == 50)
        conn = connector(config, lapi.port)
        conn.step(time.monotonic())
        posts = lapi.alert_posts()
        assert len(posts) == 1 and len(posts[0]) == 50  # 50 alerts, one request
        assert {a["source"]["value"] for a in posts[0]} == set(ips)
        assert outbox(proc) == []
        conn.step(time.monotonic() + 1)
        assert len(lapi.alert_posts()) == 1  # nothing pushed twice
    finally:
        lapi.close()


@pytest.mark.parametrize(
    "reply",
    [
        http_reply("200 OK", b"\x89PNG garbage"),
        http_reply("401 Unauthorized", b'{"message":"access forbidden"}'),
        http_reply("503 Service Unavailable", b"down"),
        None,  # accepts, never answers
    ],
    ids=["garbage", "401", "503", "hang"],
)
def test_misbehaving_lapi_keeps_items_and_local_banning(
    node: tuple[Proc, Path], reply: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    proc, config = node
    bad = BadServer(reply)
    try:
        ban(proc, ["203.0.113.80"])
        wait_for(lambda: len(outbox(proc)) == 1)
        conn = connector(config, bad.port)
        for k in range(1, 4):
            conn.step(time.monotonic() + 1000 * k)  # push and pull both due, three times
        assert len(outbox(proc)) == 1  # kept for the retry
        assert conn.push_backoff > 0 and conn.stream_errors == 3
        text = caplog.text
        assert "push to LAPI failed" in text and "crowdsec sync failed" in text
        assert text.count("crowdsec sync failed") == 1  # the next two are counted, not logged
        assert "node-a-password" not in text and "bouncer-key" not in text
        ban(proc, ["203.0.113.81"])  # local banning does not wait for the LAPI
        wait_for(lambda: "203.0.113.81" in proc.members(), 2)
        stats = proc.call(fwo.STATS, Empty())
        assert stats.crowdsec_push_failures >= 1 and stats.crowdsec_push_queue_depth == 2
    finally:
        bad.close()


def test_large_startup_stream_is_applied_in_chunks(node: tuple[Proc, Path]) -> None:
    proc, config = node
    decisions = [
        {"id": i + 1, "origin": "CAPI", "type": "ban", "scope": "Ip", "duration": "3h59m58.5s",
         "value": f"198.18.{i // 250}.{i % 250 + 1}", "scenario": "crowdsecurity/ssh-bf"}
        for i in range(25_000)
    ]  # fmt: skip
    lapi = FakeLapi(json.dumps({"new": decisions, "deleted": None}).encode())
    try:
        conn = connector(config, lapi.port)
        result = conn.pull_once()
        assert result["applied"] == 25_000
        assert len(proc.members()) == 25_000
        stats = proc.call(fwo.STATS, Empty())
        assert stats.crowdsec_remote_decisions == 25_000
        last = stats.crowdsec_last_apply
        assert last is not None and last.new == 5_000  # 10k + 10k + 5k: three batches
        assert not conn.need_startup
    finally:
        lapi.close()


def test_fleet_process_survives_a_hanging_lapi_and_stops_cleanly(tmp_path: Path) -> None:
    """The real `fleet` role as a process: a LAPI that accepts and never answers, no
    firewall at all. It keeps running, says what fails, and exits 0 on SIGTERM."""
    bad = BadServer(None)
    cfg = {
        "security": {"crowdsec": {**CROWDSEC, "lapi_url": f"http://127.0.0.1:{bad.port}",
                                  "timeout": "300ms", "poll_interval": "1s"}},
        "paths": {"runtime_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state")},
        "logging": {"format": "human", "level": "info"},
    }  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "fsguard_fleet", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        time.sleep(3)
        assert proc.poll() is None, "the fleet process died"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log_text = proc.stderr.read().decode() if proc.stderr else ""
        assert "crowdsec sync failed" in log_text and "no answer within 0.3s" in log_text
        assert "node-a-password" not in log_text and "bouncer-key" not in log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        bad.close()
