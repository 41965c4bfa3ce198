"""A fake FreeSWITCH Event Socket server speaking the real inbound protocol over TCP.

Used by every end-to-end test and by `fsguard demo`. It follows mod_event_socket's
behaviour (reference/esl-protocol.md section 1): the `auth/request` greeting, exact
reply texts, the ACL rude-rejection path, `event plain|json` subscriptions (CUSTOM
subclasses after `CUSTOM`), `api`/`bgapi`, disconnect notices, events serialized in
the subscribed format with Content-Length first. Builders create realistic sofia and
channel events; `replay()` re-sends a real capture with rewritten source addresses.

`FakeFreeSwitch` is the asyncio core; `ThreadedFakeFreeSwitch` runs it in a thread
for synchronous tests. Run standalone with `python -m shared.esl_simulator`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import re
import signal
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from shared.esl_protocol import (
    CT_EVENT_JSON,
    CT_EVENT_PLAIN,
    encode_frame,
    event_frame,
    event_from_json,
    event_from_plain,
    iter_capture_frames,
)
from shared.esl_sim_sofia import SimGateway, xmlstatus_gateways

log = logging.getLogger("fsguard.esl_simulator")

Headers = list[tuple[str, str]]
EventLike = Headers | tuple[Sequence[tuple[str, str]], bytes]
T = TypeVar("T")

SOURCE_IP_HEADERS = frozenset(
    {"network-ip", "network_ip", "Caller-Network-Addr", "variable_sip_network_ip",
     "variable_sip_received_ip"}
)
GOODBYE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
REJECTION = b"Access Denied, go away.\n"
STATUS_TEXT = (
    "UP 0 years, 0 days, 1 hour, 2 minutes, 3 seconds, 4 milliseconds, 5 microseconds\n"
    "FreeSWITCH (Version 1.10.12-release fsguard-simulator 64bit) is ready\n"
    "0 session(s) since startup\n0 session(s) - peak 0, last 5min 0 \n"
    "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n1000 session(s) max\n"
    "min idle cpu 0.00/99.00\nCurrent Stack Size/Max 240K/8192K\n"
)

# --- event builders ----------------------------------------------------------------

CORE_UUID = str(uuidlib.uuid4())
HOSTNAME = "fsguard-sim"
SWITCH_IPV4 = "192.0.2.10"
SWITCH_IPV6 = "2001:db8::10"
_sequence = itertools.count(1000)


def standard_headers(
    event_name: str, calling: tuple[str, str, int], subclass: str | None = None
) -> Headers:
    """The headers every event starts with (Event-Subclass first for CUSTOM, as on ESL)."""
    now = time.time()
    headers: Headers = []
    if subclass is not None:
        headers.append(("Event-Subclass", subclass))
    headers += [
        ("Event-Name", event_name),
        ("Core-UUID", CORE_UUID),
        ("FreeSWITCH-Hostname", HOSTNAME),
        ("FreeSWITCH-Switchname", HOSTNAME),
        ("FreeSWITCH-IPv4", SWITCH_IPV4),
        ("FreeSWITCH-IPv6", SWITCH_IPV6),
        ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))),
        ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))),
        ("Event-Date-Timestamp", str(int(now * 1_000_000))),
        ("Event-Calling-File", calling[0]),
        ("Event-Calling-Function", calling[1]),
        ("Event-Calling-Line-Number", str(calling[2])),
        ("Event-Sequence", str(next(_sequence))),
    ]
    return headers


_REG_TOKEN = ("sofia_reg.c", "sofia_reg_handle_register_token")


def _call_id() -> str:
    return f"{uuidlib.uuid4().int % 10**25}"


def register_failure(
    ip: str,
    user: str = "1000",
    domain: str = SWITCH_IPV4,
    user_agent: str = "friendly-scanner",
    registration_type: str = "REGISTER",
    *,
    port: int = 5060,
    profile: str = "internal",
) -> Headers:
    """`sofia::register_failure` (403 after a wrong digest); profile-name twice, as real."""
    headers = standard_headers("CUSTOM", (*_REG_TOKEN, 1792), "sofia::register_failure")
    return headers + [  # noqa: RUF005
        ("profile-name", profile),
        ("to-user", user),
        ("to-host", domain),
        ("network-ip", ip),
        ("user-agent", user_agent),
        ("profile-name", profile),
        ("network-port", str(port)),
        ("registration-type", registration_type),
    ]


def _reg_common(
    ip: str, user: str, domain: str, port: int, profile: str, call_id: str | None,
    expires: int, status: str = "Registered(UDP)",
) -> Headers:
    return [
        ("profile-name", profile),
        ("from-user", user),
        ("from-host", domain),
        ("contact", f'"" <sip:{user}@{ip}:{port}>'),
        ("call-id", call_id or _call_id()),
        ("rpid", "unknown"),
        ("status", status),
        ("expires", str(expires)),
        ("to-user", user),
        ("to-host", domain),
        ("network-ip", ip),
        ("network-port", str(port)),
    ]


def pre_register(
    ip: str, user: str = "1000", domain: str = SWITCH_IPV4, user_agent: str = "friendly-scanner",
    *, port: int = 5060, profile: str = "internal", call_id: str | None = None,
    expires: int = 3600,
) -> Headers:
    """`sofia::pre_register`: a request challenged with 401/407."""
    return (
        standard_headers("CUSTOM", (*_REG_TOKEN, 1810), "sofia::pre_register")
        + _reg_common(ip, user, domain, port, profile, call_id, expires)
        + [("user-agent", user_agent)]
    )


def register_attempt(
    ip: str, user: str = "1000", domain: str = SWITCH_IPV4, user_agent: str = "friendly-scanner",
    *, auth_result: str = "FORBIDDEN", port: int = 5060, profile: str = "internal",
    call_id: str | None = None, expires: int = 3600,
) -> Headers:
    """`sofia::register_attempt` with `auth-result` (SUCCESS/RENEWED/STALE/FORBIDDEN)."""
    return (
        standard_headers("CUSTOM", (*_REG_TOKEN, 1606), "sofia::register_attempt")
        + _reg_common(ip, user, domain, port, profile, call_id, expires)
        + [("username", user), ("realm", domain), ("user-agent", user_agent),
           ("auth-result", auth_result)]
    )


def _directory_merge(user: str, domain: str) -> Headers:
    return [
        ("sip_auth_username", user),
        ("sip_auth_realm", domain),
        ("number_alias", user),
        ("user_name", user),
        ("domain_name", domain),
        ("toll_allow", "domestic,international,local"),
        ("user_context", "default"),
        ("effective_caller_id_name", f"Extension {user}"),
        ("effective_caller_id_number", user),
    ]


def register(
    ip: str, user: str = "1000", domain: str = SWITCH_IPV4,
    user_agent: str = "Yealink SIP-T46S 66.86.0.15", *, port: int = 5060,
    profile: str = "internal", call_id: str | None = None, expires: int = 3600,
) -> Headers:
    """`sofia::register`: a successful registration, with the directory merge."""
    common = _reg_common(ip, user, domain, port, profile, call_id, expires)
    common.insert(3, ("presence-hosts", domain))
    return (
        standard_headers("CUSTOM", (*_REG_TOKEN, 2059), "sofia::register")
        + common
        + [("username", user), ("realm", domain), ("user-agent", user_agent)]
        + _directory_merge(user, domain)
    )


def unregister(
    ip: str, user: str = "1000", domain: str = SWITCH_IPV4,
    user_agent: str = "Yealink SIP-T46S 66.86.0.15", *, port: int = 5060,
    profile: str = "internal", call_id: str | None = None,
) -> Headers:
    """`sofia::unregister` (Expires: 0)."""
    headers = standard_headers("CUSTOM", (*_REG_TOKEN, 2213), "sofia::unregister")
    return headers + [  # noqa: RUF005
        ("profile-name", profile),
        ("username", user),
        ("from-user", user),
        ("from-host", domain),
        ("contact", f'"" <sip:{user}@{ip}:{port}>'),
        ("call-id", call_id or _call_id()),
        ("rpid", "unknown"),
        ("realm", domain),
        ("network-ip", ip),
        ("network-port", str(port)),
        ("user-agent", user_agent),
        ("expires", "0"),
        *_directory_merge(user, domain),
    ]


def wrong_call_state(ip: str, from_user: str = "1000", *, port: int = 5060) -> Headers:
    """`sofia::wrong_call_state`: an abandoned challenged INVITE (underscore names)."""
    headers = standard_headers(
        "CUSTOM", ("mod_sofia.c", "sofia_on_hangup", 672), "sofia::wrong_call_state"
    )
    headers += [("from_user", from_user), ("network_ip", ip), ("network_port", str(port))]
    return headers


def _channel_headers(
    ip: str, uuid: str, destination: str, context: str, profile: str, user_agent: str,
    authorized: bool, from_host: str, from_user: str, port: int, state: tuple[str, str, int],
) -> Headers:
    name = f"sofia/{profile}/{from_user}@{from_host}"
    headers: Headers = [
        ("Channel-State", state[0]),
        ("Channel-Call-State", state[1]),
        ("Channel-State-Number", str(state[2])),
        ("Channel-Name", name),
        ("Unique-ID", uuid),
        ("Call-Direction", "inbound"),
        ("Presence-Call-Direction", "inbound"),
        ("Channel-HIT-Dialplan", "true"),
        ("Channel-Call-UUID", uuid),
        ("Answer-State", "ringing"),
        ("Caller-Direction", "inbound"),
        ("Caller-Logical-Direction", "inbound"),
        ("Caller-Username", from_user),
        ("Caller-Dialplan", "XML"),
        ("Caller-Caller-ID-Name", from_user),
        ("Caller-Caller-ID-Number", from_user),
        ("Caller-Network-Addr", ip),
        ("Caller-ANI", from_user),
        ("Caller-Destination-Number", destination),
        ("Caller-Unique-ID", uuid),
        ("Caller-Source", "mod_sofia"),
        ("Caller-Context", context),
        ("Caller-Channel-Name", name),
        ("variable_direction", "inbound"),
        ("variable_uuid", uuid),
        ("variable_sip_from_user", from_user),
        ("variable_sip_from_uri", f"{from_user}@{from_host}"),
        ("variable_sip_from_host", from_host),
        ("variable_channel_name", name),
        ("variable_sip_call_id", _call_id()),
        ("variable_sip_local_network_addr", SWITCH_IPV4),
        ("variable_sip_network_ip", ip),
        ("variable_sip_network_port", str(port)),
        ("variable_sip_received_ip", ip),
        ("variable_sip_received_port", str(port)),
        ("variable_sip_via_protocol", "udp"),
        ("variable_sofia_profile_name", profile),
        ("variable_sip_req_user", destination),
        ("variable_sip_to_user", destination),
        ("variable_sip_user_agent", user_agent),
    ]
    if authorized:
        headers += [("variable_sip_authorized", "true"), ("variable_sip_auth_username", from_user),
                    ("variable_sip_auth_realm", from_host)]
    return headers


def channel_create(
    ip: str, uuid: str | None = None, destination: str = "1000", context: str = "default",
    profile: str = "internal", user_agent: str = "Yealink SIP-T46S 66.86.0.15",
    authorized: bool = True, from_host: str = SWITCH_IPV4, *, from_user: str = "1001",
    port: int = 5060,
) -> Headers:
    """`CHANNEL_CREATE` of an inbound sofia call (subset of the real channel headers)."""
    uuid = uuid or str(uuidlib.uuid4())
    return standard_headers(
        "CHANNEL_CREATE", ("switch_core_state_machine.c", "switch_core_session_run", 626)
    ) + _channel_headers(ip, uuid, destination, context, profile, user_agent, authorized,
                         from_host, from_user, port, ("CS_INIT", "DOWN", 2))


def channel_hangup_complete(
    ip: str, uuid: str, cause: str = "NORMAL_CLEARING", destination: str = "1000",
    context: str = "default", profile: str = "internal",
    user_agent: str = "Yealink SIP-T46S 66.86.0.15", authorized: bool = True,
    from_host: str = SWITCH_IPV4, *, from_user: str = "1001", port: int = 5060,
) -> Headers:
    """`CHANNEL_HANGUP_COMPLETE` (Hangup-Cause twice, as real)."""
    base = _channel_headers(ip, uuid, destination, context, profile, user_agent, authorized,
                            from_host, from_user, port, ("CS_REPORTING", "HANGUP", 11))
    base.insert(10, ("Hangup-Cause", cause))
    headers = standard_headers("CHANNEL_HANGUP_COMPLETE", (
        "switch_core_state_machine.c", "switch_core_session_reporting_state", 943))
    headers.append(("Hangup-Cause", cause))
    headers += base
    headers += [("variable_hangup_cause", cause), ("variable_sip_hangup_disposition", "send_bye")]
    return headers


def heartbeat() -> Headers:
    """`HEARTBEAT` as switch_core.c sends it every 20 s."""
    headers = standard_headers("HEARTBEAT", ("switch_core.c", "send_heartbeat", 95))
    return headers + [  # noqa: RUF005
        ("Event-Info", "System Ready"),
        ("Up-Time", STATUS_TEXT.split("\n", 1)[0][3:]),
        ("FreeSWITCH-Version", "1.10.12-release~64bit"),
        ("Uptime-msec", "3723004"),
        ("Session-Count", "0"),
        ("Max-Sessions", "1000"),
        ("Session-Per-Sec", "30"),
        ("Session-Since-Startup", "0"),
        ("Idle-CPU", "99.000000"),
    ]


def background_job(job_uuid: str, command: str, arg: str) -> Headers:
    headers = standard_headers("BACKGROUND_JOB", ("mod_event_socket.c", "api_exec", 1580))
    headers += [("Job-UUID", job_uuid), ("Job-Command", command)]
    if arg:
        headers.append(("Job-Command-Arg", arg))
    return headers


# --- capture replay helpers --------------------------------------------------------------


@dataclass
class CapturedEvent:
    headers: Headers
    body: bytes | None

    @property
    def name(self) -> str:
        return _first(self.headers, "Event-Name") or ""

    @property
    def timestamp_us(self) -> int:
        value = _first(self.headers, "Event-Date-Timestamp") or ""
        return int(value) if value.isdigit() else 0


def _first(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def load_capture(source: str | Path | bytes) -> list[CapturedEvent]:
    """Events of a capture file (plain or json, auto-detected per frame)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    events: list[CapturedEvent] = []
    for frame in iter_capture_frames(data):
        if frame.content_type == CT_EVENT_PLAIN:
            events.append(CapturedEvent(*event_from_plain(frame.body)))
        elif frame.content_type == CT_EVENT_JSON:
            events.append(CapturedEvent(*event_from_json(frame.body)))
    return events


def rewrite_source_ip(
    headers: Sequence[tuple[str, str]], rewrite_ip: str | Mapping[str, str] | None
) -> Headers:
    """Replace the source-address headers with `rewrite_ip` (or per an old->new mapping)."""
    if rewrite_ip is None:
        return list(headers)
    out: Headers = []
    for key, value in headers:
        if key in SOURCE_IP_HEADERS:
            value = rewrite_ip if isinstance(rewrite_ip, str) else rewrite_ip.get(value, value)
        out.append((key, value))
    return out


# --- the server ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    authed: bool = False
    fmt: str | None = None  # subscribed event format
    all_events: bool = False
    names: set[str] = field(default_factory=set)
    subclasses: set[str] = field(default_factory=set)
    silent: bool = False

    @property
    def subscribed(self) -> bool:
        return self.fmt is not None and (self.all_events or bool(self.names or self.subclasses))

    def wants(self, headers: Sequence[tuple[str, str]]) -> bool:
        if self.silent or not self.authed or self.fmt is None:
            return False
        if self.all_events:
            return True
        name = (_first(headers, "Event-Name") or "").upper()
        if name == "CUSTOM":
            return (_first(headers, "Event-Subclass") or "") in self.subclasses
        return name in self.names

    def write(self, data: bytes) -> None:
        if not self.silent and not self.writer.is_closing():
            self.writer.write(data)


_CMD_END = re.compile(rb"\n\r?\n")


class FakeFreeSwitch:
    """Asyncio fake of mod_event_socket (inbound mode)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        password: str = "ClueCon",
        *,
        sock: socket.socket | None = None,
        acl_reject: bool = False,
        heartbeat_interval: float | None = None,
        api_responses: dict[str, str] | None = None,
        gateways: list[SimGateway] | None = None,
    ) -> None:
        self.host = host
        self.gateways: list[SimGateway] = list(gateways or [])  # `sofia xmlstatus gateway`
        self._port = port
        self._password = password
        self._sock = sock
        self.acl_reject = acl_reject
        self.heartbeat_interval = heartbeat_interval
        self.api_responses = (
            {"status": STATUS_TEXT} if api_responses is None else dict(api_responses)
        )
        self.commands: list[str] = []
        self.connections_total = 0
        self.subscriptions_total = 0
        self.events_sent = 0
        self.channels: set[str] = set()  # Unique-IDs of CHANNEL_CREATEs sent (uuid_kill)
        self._clients: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=self._sock)
        else:
            self._server = await asyncio.start_server(self._handle, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        if self.heartbeat_interval:
            self._spawn(self._heartbeats(self.heartbeat_interval))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await self.kill_connections()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def connected_clients(self) -> int:
        """Open connections that passed authentication."""
        return sum(1 for c in self._clients if c.authed and not c.writer.is_closing())

    @property
    def subscribed_clients(self) -> int:
        return sum(1 for c in self._clients if c.subscribed and not c.writer.is_closing())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- control for tests -------------------------------------------------------------
    async def send_event(
        self, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> int:
        """Send one event to every client subscribed to it; returns how many got it."""
        return await self.send_events([(headers, body)])

    async def send_events(self, events: Iterable[EventLike]) -> int:
        """Send events (header lists, or (headers, body) pairs); returns deliveries."""
        batch: list[tuple[Sequence[tuple[str, str]], bytes | None]] = []
        for item in events:
            if isinstance(item, tuple):
                headers, body = item
                batch.append((headers, body or None))
            else:
                batch.append((item, None))
        return await self._deliver(batch)

    async def _deliver(
        self, batch: Sequence[tuple[Sequence[tuple[str, str]], bytes | None]]
    ) -> int:
        clients = [c for c in self._clients if c.fmt is not None and not c.silent]
        outputs: dict[_Client, list[bytes]] = {c: [] for c in clients}
        delivered = 0
        for headers, body in batch:
            if _first(headers, "Event-Name") == "CHANNEL_CREATE":
                uid = _first(headers, "Unique-ID")
                if uid:
                    self.channels.add(uid)
            cache: dict[str, bytes] = {}
            for client in clients:
                if client.wants(headers):
                    assert client.fmt is not None
                    frame = cache.get(client.fmt)
                    if frame is None:
                        frame = cache[client.fmt] = event_frame(client.fmt, headers, body)
                    outputs[client].append(frame)
                    delivered += 1
        for client, frames in outputs.items():
            if frames:
                client.write(b"".join(frames))
        self.events_sent += delivered
        for client in outputs:
            with contextlib.suppress(ConnectionError):
                await client.writer.drain()
        return delivered

    async def replay(
        self,
        source: str | Path | bytes | Sequence[CapturedEvent],
        *,
        rewrite_ip: str | Mapping[str, str] | None = None,
        speed: float | None = None,
    ) -> int:
        """Re-send a capture's events in each client's format; returns deliveries.

        speed None sends as fast as possible; otherwise the Event-Date-Timestamp gaps
        are honoured, divided by `speed`.
        """
        events: list[CapturedEvent] = (
            load_capture(source) if isinstance(source, str | Path | bytes) else list(source)
        )
        prepared = [(rewrite_source_ip(e.headers, rewrite_ip), e.body, e.timestamp_us)
                    for e in events]
        if speed is None:
            total = 0
            for i in range(0, len(prepared), 2000):
                total += await self._deliver([(h, b) for h, b, _ in prepared[i : i + 2000]])
            return total
        total = 0
        start = time.monotonic()
        first_ts = next((ts for _, _, ts in prepared if ts), 0)
        for headers, body, ts in prepared:
            if ts and first_ts:
                due = start + (ts - first_ts) / 1_000_000 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            total += await self._deliver([(headers, body)])
        return total

    async def kill_connections(self) -> None:
        """Drop every connection without a notice (like a crash)."""
        for client in list(self._clients):
            transport = client.writer.transport
            transport.abort()

    async def send_disconnect_notice(self) -> None:
        """Send the normal goodbye notice to every client, then close (like `fsctl shutdown`)."""
        for client in list(self._clients):
            client.silent = False
            client.write(encode_frame("text/disconnect-notice", GOODBYE))
            client.writer.close()

    async def go_silent(self) -> None:
        """Current connections stay open but get nothing more (a hung server)."""
        for client in self._clients:
            client.silent = True

    async def send_raw(self, data: bytes) -> None:
        """Write raw bytes to every connection (malformed-frame tests)."""
        for client in list(self._clients):
            client.write(data)
            with contextlib.suppress(ConnectionError):
                await client.writer.drain()

    async def wait_for_client(self, timeout: float = 5.0) -> bool:
        return await self._wait(lambda: self.connected_clients > 0, timeout)

    async def wait_for_subscription(self, timeout: float = 5.0, count: int = 1) -> bool:
        """Wait until `count` subscriptions happened in total and one client is subscribed."""
        return await self._wait(
            lambda: self.subscriptions_total >= count and self.subscribed_clients > 0, timeout
        )

    @staticmethod
    async def _wait(cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- protocol ------------------------------------------------------------------------
    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.send_event(heartbeat())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        client = _Client(writer)
        self._clients.add(client)
        try:
            if self.acl_reject:
                writer.write(encode_frame("text/rude-rejection", REJECTION))
                writer.write(encode_frame("text/disconnect-notice", GOODBYE))
                await writer.drain()
                return
            writer.write(b"Content-Type: auth/request\n\n")
            await writer.drain()
            buf = b""
            while True:
                m = _CMD_END.search(buf)
                while m is None:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    buf = (buf + chunk).lstrip(b"\r\n")
                    m = _CMD_END.search(buf)
                block, buf = buf[: m.start()], buf[m.end() :]
                lines = block.split(b"\n")
                command = lines[0].rstrip(b"\r").decode("utf-8", "replace")
                extra: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.rstrip(b"\r").decode("utf-8", "replace").partition(":")
                    extra[name.strip().lower()] = value.strip()
                clen = extra.get("content-length", "")
                if clen.isdigit():
                    while len(buf) < int(clen):
                        chunk = await reader.read(65536)
                        if not chunk:
                            return
                        buf += chunk
                    buf = buf[int(clen) :]
                if not await self._command(client, command, extra):
                    return
                buf = buf.lstrip(b"\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(client)
            with contextlib.suppress(Exception):
                writer.close()

    def _reply(self, client: _Client, text: str) -> None:
        client.write(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())

    async def _command(self, client: _Client, command: str, extra: dict[str, str]) -> bool:
        """Execute one command; False closes the connection."""
        verb, _, rest = command.partition(" ")
        low = verb.lower()
        if low in ("auth", "userauth"):
            self.commands.append(f"{verb} ********")
        else:
            self.commands.append(command)
        if low in ("exit", "..."):
            self._reply(client, "+OK bye")
            client.write(encode_frame("text/disconnect-notice", GOODBYE))
            await client.writer.drain()
            return False
        if not client.authed:
            if low == "auth":
                if rest == self._password:
                    client.authed = True
                    self._reply(client, "+OK accepted")
                    return True
                self._reply(client, "-ERR invalid")
                client.write(encode_frame("text/disconnect-notice", GOODBYE))
                await client.writer.drain()
                return False
            self._reply(client, "-ERR command not found")
            return True
        if low == "event":
            self._subscribe(client, rest.split())
        elif low == "noevents":
            ok = client.fmt is not None
            client.fmt, client.all_events = None, False
            client.names.clear()
            client.subclasses.clear()
            self._reply(client, "+OK no longer listening for events" if ok
                        else "-ERR not listening for events")
        elif low == "api":
            body = self._api_output(rest) or "-ERR no reply\n"
            await self.on_api(rest)
            client.write(encode_frame("api/response", body.encode("utf-8")))
        elif low == "bgapi":
            job = extra.get("job-uuid", "")[:36] or str(uuidlib.uuid4())
            client.write(
                f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\n"
                f"Job-UUID: {job}\n\n".encode()
            )
            name, _, arg = rest.partition(" ")
            output = self._api_output(rest).encode("utf-8")
            self._spawn(self.send_event(background_job(job, name, arg), output))
        elif low == "filter":
            parts = rest.split(" ", 1)
            if len(parts) < 2:
                self._reply(client, "-ERR invalid syntax")
            else:
                self._reply(client, f"+OK filter added. [{parts[0]}]=[{parts[1]}]")
        else:
            self._reply(client, "-ERR command not found")
        return True

    async def on_api(self, command: str) -> None:
        """Hook awaited before an api/response is written (tests override it)."""

    def _subscribe(self, client: _Client, tokens: list[str]) -> None:
        fmt = "plain"
        if tokens and tokens[0].lower() in ("plain", "json", "xml"):
            fmt = tokens.pop(0).lower()
        client.fmt = fmt
        custom = False
        valid = False
        for tok in tokens:
            if custom:
                client.subclasses.add(tok)
                valid = True
            elif tok.upper() == "CUSTOM":
                custom = True
                client.names.add("CUSTOM")
                valid = True
            elif tok.upper() == "ALL":
                client.all_events = True
                valid = True
            elif re.fullmatch(r"[A-Za-z_]+", tok):
                client.names.add(tok.upper())
                valid = True
        if not valid:
            self._reply(client, "-ERR no keywords supplied")
            return
        self.subscriptions_total += 1
        self._reply(client, f"+OK event listener enabled {fmt}")

    def _api_output(self, command: str) -> str:
        name, _, arg = command.partition(" ")
        best = ""
        for key in self.api_responses:
            if command.startswith(key) and len(key) > len(best):
                best = key
        if best:
            return self.api_responses[best]
        if command.split() == ["sofia", "xmlstatus", "gateway"]:
            return xmlstatus_gateways(self.gateways)
        if name == "uuid_kill":
            uid = arg.split(" ", 1)[0]
            if uid in self.channels:
                self.channels.discard(uid)
                return "+OK\n"
            return "-ERR No such channel!\n"
        return f"-ERR {name} Command not found!\n"


class ThreadedFakeFreeSwitch:
    """`FakeFreeSwitch` on its own event loop thread, for synchronous tests."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        password: str = "ClueCon",
        *,
        sock: socket.socket | None = None,
        acl_reject: bool = False,
        heartbeat_interval: float | None = None,
        api_responses: dict[str, str] | None = None,
    ) -> None:
        self.server = FakeFreeSwitch(
            host, port, password, sock=sock, acl_reject=acl_reject,
            heartbeat_interval=heartbeat_interval, api_responses=api_responses,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-freeswitch",
                                        daemon=True)
        self._thread.start()
        self._call(self.server.start())

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self.server.stop(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> ThreadedFakeFreeSwitch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def commands(self) -> list[str]:
        return list(self.server.commands)

    @property
    def connected_clients(self) -> int:
        return self.server.connected_clients

    @property
    def connections_total(self) -> int:
        return self.server.connections_total

    @property
    def subscriptions_total(self) -> int:
        return self.server.subscriptions_total

    def send_event(self, headers: Sequence[tuple[str, str]], body: bytes = b"") -> int:
        return self._call(self.server.send_event(headers, body))

    def send_events(self, events: Iterable[EventLike]) -> int:
        return self._call(self.server.send_events(list(events)))

    def replay(
        self,
        source: str | Path | bytes,
        *,
        rewrite_ip: str | Mapping[str, str] | None = None,
        speed: float | None = None,
    ) -> int:
        return self._call(self.server.replay(source, rewrite_ip=rewrite_ip, speed=speed),
                          timeout=3600)

    def kill_connections(self) -> None:
        self._call(self.server.kill_connections())

    def send_disconnect_notice(self) -> None:
        self._call(self.server.send_disconnect_notice())

    def go_silent(self) -> None:
        self._call(self.server.go_silent())

    def send_raw(self, data: bytes) -> None:
        self._call(self.server.send_raw(data))

    def wait_for_client(self, timeout: float = 5.0) -> bool:
        return self._call(self.server.wait_for_client(timeout), timeout + 5)

    def wait_for_subscription(self, timeout: float = 5.0, count: int = 1) -> bool:
        return self._call(self.server.wait_for_subscription(timeout, count), timeout + 5)


# --- command line ----------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeFreeSwitch(args.host, args.port, args.password,
                          heartbeat_interval=args.heartbeat)
    await fake.start()
    print(f"fake FreeSWITCH ESL listening on {args.host}:{fake.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.replay:
        events = load_capture(args.replay)
        waiter = loop.create_task(fake.wait_for_subscription(86400 * 365))
        await asyncio.wait({waiter, loop.create_task(stop.wait())},
                           return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            sent = await fake.replay(events, rewrite_ip=args.rewrite_ip, speed=args.speed)
            print(f"replayed {sent} events", flush=True)
        waiter.cancel()
    await stop.wait()
    await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake FreeSWITCH Event Socket server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--password", default="ClueCon")
    parser.add_argument("--replay", help="capture file to replay after the first subscription")
    parser.add_argument("--rewrite-ip", help="source address to put into replayed events")
    parser.add_argument("--speed", type=float, default=None,
                        help="replay at recorded pace divided by this (default: flat out)")
    parser.add_argument("--heartbeat", type=float, default=None, help="HEARTBEAT interval, s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
