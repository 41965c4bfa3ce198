"""EslClient against the fake FreeSWITCH over real TCP sockets."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from fsguard_cli.simulator import (
    EventLike,
    FakeFreeSwitch,
    heartbeat,
    load_capture,
    pre_register,
    register_failure,
)
from fsguard_supervisor.esl_client import (
    DEFAULT_EVENTS,
    EslClient,
    EslCommandError,
    EslNotConnected,
    subscribe_command,
)
from fsguard_supervisor.esl_protocol import iter_capture_frames
from tests.esl_helpers import (
    InterleavingSwitch,
    Sink,
    held_switch,
    run,
    running,
    started,
    subscribed,
    until,
)

FIXTURES = Path(__file__).parent / "fixtures"
SUBSCRIBE = (
    "event json CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE HEARTBEAT CUSTOM "
    "sofia::register_failure sofia::register_attempt sofia::pre_register sofia::register "
    "sofia::unregister sofia::expire sofia::wrong_call_state"
)
SECRET = "s3cret-Pa55"


def test_subscribe_command_order() -> None:
    assert subscribe_command(DEFAULT_EVENTS) == SUBSCRIBE
    # CUSTOM is moved last even when listed first; bare subclasses imply CUSTOM
    assert subscribe_command(["sofia::register", "HEARTBEAT"]) == \
        "event json HEARTBEAT CUSTOM sofia::register"
    with pytest.raises(ValueError):
        subscribe_command(["HEARTBEAT\n\napi system id"])


def test_connect_subscribe_and_batched_events() -> None:
    async def scenario() -> None:
        async with subscribed() as (sim, client, sink):
            assert sim.commands == ["auth ********", SUBSCRIBE]
            assert await until(lambda: client.stats.connected)
            events: list[EventLike] = [register_failure(f"203.0.113.{i}") for i in range(50)]
            events.append(heartbeat())
            events.append((pre_register("198.51.100.7"), b""))
            assert await sim.send_events(events) == 52
            assert await until(lambda: len(sink.events) == 52)
            got = sink.events
            assert [e["network-ip"] for e in got[:50]] == [f"203.0.113.{i}" for i in range(50)]
            assert got[50]["Event-Name"] == "HEARTBEAT"
            assert len(sink.batches) < 52  # several events per on_events call
            assert all(isinstance(ts, float) and ts > 1e9 for _, ts in sink.batches)
            assert client.stats.events_received == 52
            assert client.stats.connection_attempts == 1 and client.stats.reconnects == 0
            assert sink.changes == [True]
        assert sink.changes == [True, False]

    run(scenario)


def test_plain_frames_are_converted_to_json() -> None:
    async def scenario() -> None:
        async with subscribed() as (sim, client, sink):
            before = client.stats.frames_received
            plain = (FIXTURES / "register_failure.txt").read_bytes()
            expected = next(iter_capture_frames(
                (FIXTURES / "register_failure_json.txt").read_bytes())).body
            log_frame = (FIXTURES / "log_data.txt").read_bytes()
            await sim.send_raw(plain + log_frame + plain[:100])
            await sim.send_raw(plain[100:])

            def bodies() -> list[bytes]:
                return [b for batch, _ in sink.batches for b in batch]

            assert await until(lambda: len(bodies()) == 2)
            assert bodies() == [expected, expected]
            assert client.stats.frames_received - before == 3
            assert client.stats.events_received == 2

    run(scenario)


def test_auth_failure_is_reported_retried_and_never_logs_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        sim = await started(password="right")
        async with running(sim, password=SECRET) as (client, sink):
            assert await until(lambda: client.stats.auth_failures >= 3)
            assert not client.stats.connected
            assert "authentication failed" in client.stats.last_error
            with pytest.raises(EslNotConnected):
                await client.api("status")
            assert sink.changes == []
        assert all(c == "auth ********" for c in sim.commands)
        assert sim.connections_total >= 3
        await sim.stop()

    run(scenario)
    assert SECRET not in caplog.text
    assert "authentication failed" in caplog.text


def test_rude_rejection_is_an_acl_error(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        sim = await started(acl_reject=True)
        async with running(sim) as (client, _):
            assert await until(lambda: client.stats.acl_rejections >= 2)
            assert "apply-inbound-acl" in client.stats.last_error
            assert client.stats.auth_failures == 0
        assert sim.commands == []  # nothing sent after a rejection
        await sim.stop()

    run(scenario)
    assert "FreeSWITCH rejected this address: check apply-inbound-acl" in caplog.text


def test_disconnect_notice_then_reconnect() -> None:
    async def scenario() -> None:
        async with subscribed() as (sim, client, sink):
            await sim.send_disconnect_notice()
            assert await sim.wait_for_subscription(5, count=2)
            assert await until(lambda: client.stats.connected)
            assert "disconnect-notice" in client.stats.last_error or client.stats.reconnects
            assert client.stats.reconnects == 1
            assert sink.changes == [True, False, True]
            await sim.send_event(register_failure("192.0.2.99"))
            assert await until(lambda: len(sink.events) == 1)

    run(scenario)


def test_server_restart_on_same_port_reconnects_with_backoff() -> None:
    async def scenario() -> None:
        sim = await started()
        port = sim.port
        async with running(sim, base_backoff=0.05, max_backoff=0.4) as (client, sink):
            assert await sim.wait_for_subscription(5)
            await sim.stop()
            # connection refused a few times: backoff grows, errors are counted
            assert await until(lambda: client.stats.connection_errors >= 3)
            assert not client.stats.connected
            sim2 = await started(port=port)
            assert await sim2.wait_for_subscription(5)
            assert await until(lambda: client.stats.connected)
            assert client.stats.reconnects >= 3
            await sim2.send_event(register_failure("192.0.2.98"))
            assert await until(lambda: len(sink.events) == 1)
            assert sink.changes == [True, False, True]
        await sim2.stop()

    run(scenario)


def test_liveness_timeout_reconnects() -> None:
    async def scenario() -> None:
        async with subscribed(heartbeat_interval=0.1, liveness_intervals=3) as (sim, client, _):
            await sim.go_silent()
            assert await sim.wait_for_subscription(5, count=2)
            assert "liveness" in client.stats.last_error or client.stats.reconnects == 1

    run(scenario)


def test_heartbeats_keep_a_connection_alive() -> None:
    async def scenario() -> None:
        sim = FakeFreeSwitch(heartbeat_interval=0.05)
        async with subscribed(sim, heartbeat_interval=0.1, liveness_intervals=3) as (_, client,
                                                                                     sink):
            assert await until(lambda: len(sink.events) >= 15)  # >= 0.75 s of heartbeats
            assert client.stats.reconnects == 0

    run(scenario)


def test_concurrent_api_calls_get_their_own_replies() -> None:
    async def scenario() -> None:
        responses = {f"cmd{i}": f"reply {i}\n" for i in range(8)}
        async with subscribed(InterleavingSwitch(api_responses=responses)) as (_, client, sink):
            replies = await asyncio.gather(*(client.api(f"cmd{i}") for i in range(8)))
            assert replies == [f"reply {i}\n" for i in range(8)]
            assert await until(lambda: len(sink.events) == 8)
            assert [e["to-user"] for e in sink.events] == [f"cmd{i}" for i in range(8)]
            with pytest.raises(EslCommandError) as info:
                await client.api("nosuch arg")
            assert info.value.reply == "-ERR nosuch Command not found!\n"
            job = await client.bgapi("cmd1")
            assert len(job) == 36

    run(scenario)


def test_timed_out_command_keeps_its_reply_slot() -> None:
    async def scenario() -> None:
        sim = held_switch({"slow": "slow reply\n", "fast": "fast reply\n"})
        async with subscribed(sim) as (_, client, _):
            with pytest.raises(TimeoutError):
                await client.api("slow", timeout=0.1)
            later = asyncio.create_task(client.api("fast"))
            await asyncio.sleep(0.05)
            sim.release()
            assert await asyncio.wait_for(later, 5) == "fast reply\n"

    run(scenario)


def test_pending_commands_fail_on_disconnect() -> None:
    async def scenario() -> None:
        sim = held_switch({"x": "y\n"})
        async with subscribed(sim) as (_, client, _):
            pending = [asyncio.create_task(client.api("x")) for _ in range(3)]
            assert await until(lambda: sim.commands.count("api x") >= 1)
            await sim.kill_connections()
            for task in pending:
                with pytest.raises(EslNotConnected):
                    await asyncio.wait_for(task, 5)
            sim.release()

    run(scenario)


@pytest.mark.parametrize("bad", [
    b"Content-Type: text/event-json\nContent-Length: -1\n\n",
    b"Content-Length: 99999999999\nContent-Type: text/event-json\n\n",
    b"no colon here\n\n",
])
def test_malformed_frame_is_counted_and_resynchronised(bad: bytes) -> None:
    async def scenario() -> None:
        async with subscribed() as (sim, client, sink):
            good = (FIXTURES / "register_failure_json.txt").read_bytes()
            await sim.send_raw(good + bad + good)
            assert await sim.wait_for_subscription(5, count=2)
            assert client.stats.malformed_frames == 1
            assert len(sink.events) == 1  # the good frame before the bad one
            await sim.send_event(register_failure("192.0.2.97"))
            assert await until(lambda: len(sink.events) == 2)

    run(scenario)


@pytest.mark.parametrize("command", [
    "status\n\napi system touch /tmp/pwned",
    "status\r\nbgapi system id",
    "status\x00",
    "status\tx",
    "status\x7f",
    "",
])
def test_control_characters_rejected_before_sending(command: str) -> None:
    async def scenario() -> None:
        async with subscribed() as (sim, client, _):
            with pytest.raises(ValueError):
                await client.api(command)
            with pytest.raises(ValueError):
                await client.bgapi(command)
            assert await client.api("status") == sim.api_responses["status"]
            assert sim.commands == ["auth ********", SUBSCRIBE, "api status"]

    run(scenario)


def _expected_subscribed(capture: str) -> int:
    names = {"CHANNEL_CREATE", "CHANNEL_HANGUP_COMPLETE", "HEARTBEAT"}
    subclasses = {e for e in DEFAULT_EVENTS if "::" in e}
    return sum(
        1 for e in load_capture(FIXTURES / capture)
        if e.name in names or (e.name == "CUSTOM" and dict(e.headers).get("Event-Subclass")
                               in subclasses)
    )


@pytest.mark.parametrize("capture", ["capture_plain.bin", "capture_json.bin"])
def test_replay_with_rewritten_source_ip(capture: str) -> None:
    async def scenario() -> None:
        async with subscribed() as (sim, _, sink):
            expected = _expected_subscribed(capture)
            assert expected > 50
            sent = await sim.replay(FIXTURES / capture, rewrite_ip="203.0.113.77")
            assert sent == expected
            assert await until(lambda: len(sink.events) == expected)
            ips = [e.get("network-ip") or e.get("network_ip") for e in sink.events
                   if e["Event-Name"] == "CUSTOM"]
            assert len(ips) > 40 and set(ips) == {"203.0.113.77"}
            for e in sink.events:
                assert "127.0.0.1" not in {e.get(k) for k in (
                    "network-ip", "network_ip", "Caller-Network-Addr",
                    "variable_sip_network_ip", "variable_sip_received_ip")}

    run(scenario)


def test_request_reconnect_and_stop_without_server() -> None:
    async def scenario() -> None:
        async with subscribed() as (sim, client, _):
            client.request_reconnect()
            assert await sim.wait_for_subscription(5, count=2)
        # nothing listening: run() keeps retrying, stop() still ends it promptly
        sink = Sink()
        client = EslClient("127.0.0.1", sim.port, "x", on_events=sink.on_events,
                           base_backoff=0.05)
        task = asyncio.create_task(client.run())
        assert await until(lambda: client.stats.connection_errors >= 2)
        await client.stop()
        await asyncio.wait_for(task, 5)
        assert repr(client) == f"EslClient(127.0.0.1:{sim.port})"

    run(scenario)
