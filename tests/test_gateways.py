"""issue 12 §2: FreeSWITCH gateways as protected sources. The fake FreeSWITCH answers
`api sofia xmlstatus gateway` as mod_sofia does (real TCP, real ESL framing); the
supervisor's GatewayWatch parses, resolves and pushes the addresses."""

from __future__ import annotations

import asyncio

from fsguard_cli.simulator import (
    FakeFreeSwitch,
    SimGateway,
    ThreadedFakeFreeSwitch,
    xmlstatus_gateways,
)
from fsguard_supervisor.esl_client import EslClient
from fsguard_supervisor.gateways import GATEWAY_COMMAND, GatewayWatch, proxy_hosts, resolve
from shared.config import Config
from shared.esl_hardening import esl_warnings
from tests.test_esl_simulator import RawClient

GATEWAYS = [
    SimGateway(name="carrier-a", proxy="sip:203.0.113.5"),
    SimGateway(name="carrier-b", proxy="sip:trunk@[2001:db8::5]:5061;transport=tcp"),
    SimGateway(name="local", proxy="sip:localhost:5080", state="NOREG", status="DOWN"),
    SimGateway(name="dup", proxy="sips:203.0.113.5:5061"),
]


def test_fake_answers_like_mod_sofia() -> None:
    with ThreadedFakeFreeSwitch(FakeFreeSwitch(gateways=list(GATEWAYS[:1]))) as fake:
        client = RawClient(fake.port)
        client.login()
        client.send(f"api {GATEWAY_COMMAND}")
        (frame,) = client.read_frames(1)
        client.close()
    assert frame.header("Content-Type") == "api/response"
    text = frame.body.decode()
    assert text.startswith('<?xml version="1.0" encoding="ISO-8859-1"?>\n<gateways>\n  <gateway>\n')
    assert "    <name>carrier-a</name>\n    <profile>external</profile>\n" in text
    assert "    <proxy>sip:203.0.113.5</proxy>\n" in text
    assert text.endswith("  </gateway>\n</gateways>\n")
    empty = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<gateways>\n</gateways>\n'
    assert xmlstatus_gateways([]) == empty


def test_proxy_hosts_of_every_uri_form_once() -> None:
    hosts = proxy_hosts(xmlstatus_gateways(GATEWAYS))
    assert hosts == ["203.0.113.5", "2001:db8::5", "localhost"]
    assert proxy_hosts("<proxy>sip:evil\nhost</proxy><proxy>;x</proxy>") == []


def test_resolve_keeps_literals_and_resolves_names() -> None:
    out = asyncio.run(resolve(["203.0.113.5", "localhost", "no-such-host.invalid"], timeout=3))
    assert out[0] == "203.0.113.5"
    assert "127.0.0.1" in out or "::1" in out
    assert all(not a.endswith(".invalid") for a in out)


def test_gateway_watch_over_real_esl_pushes_the_addresses() -> None:
    async def scenario() -> list[list[str]]:
        fake = FakeFreeSwitch(gateways=list(GATEWAYS[:2]))
        await fake.start()
        client = EslClient("127.0.0.1", fake.port, "ClueCon", on_events=lambda b, t: None)
        runner = asyncio.ensure_future(client.run())
        pushed: list[list[str]] = []

        async def push(addresses: list[str]) -> None:
            pushed.append(addresses)

        watch = GatewayWatch(client.api, push, lambda: client.stats.connected, 3600)
        for _ in range(100):
            if client.stats.connected:
                break
            await asyncio.sleep(0.05)
        assert await watch.refresh()
        fake.gateways = []
        assert await watch.refresh()
        await client.stop()
        runner.cancel()
        await fake.stop()
        assert fake.commands.count(f"api {GATEWAY_COMMAND}") == 2
        return pushed

    assert asyncio.run(scenario()) == [["203.0.113.5", "2001:db8::5"], []]


def test_gateway_watch_keeps_the_last_list_when_the_query_fails() -> None:
    async def failing(command: str) -> str:
        raise ConnectionError("not connected")

    async def push(addresses: list[str]) -> None:
        raise AssertionError("nothing to push")

    watch = GatewayWatch(failing, push, lambda: True, 60)
    watch.addresses = ["203.0.113.5"]
    assert asyncio.run(watch.refresh()) is False
    assert watch.addresses == ["203.0.113.5"] and watch.failures == 1


def test_esl_hardening_checks() -> None:
    config = Config()
    assert set(esl_warnings(config)) == {"default_password"}
    config.security.esl_password = "a-long-secret"
    assert esl_warnings(config) == {}
    cases = [("10.1.2.3", False), ("::1", False), ("localhost", False), ("fd00::1", False),
             ("198.18.0.1", True), ("203.0.113.9", True), ("fs.example.com", True)]  # fmt: skip
    for host, exposed in cases:
        config.security.esl_host = host
        assert ("exposed_host" in esl_warnings(config)) is exposed, host
