"""A fake FreeSWITCH Event Socket server speaking the real inbound protocol over TCP.

Used by every end-to-end test and by `fsguard demo`. It follows mod_event_socket's
behaviour (reference/esl-protocol.md section 1): the `auth/request` greeting, exact
reply texts, the ACL rude-rejection path, `event plain|json` subscriptions (CUSTOM
subclasses after `CUSTOM`), `api`/`bgapi`, disconnect notices, events serialized in
the subscribed format with Content-Length first. Builders (events.py) create realistic
sofia and channel events; `replay()` re-sends a real capture (capture.py) with
rewritten source addresses.

`FakeFreeSwitch` is the asyncio core; `ThreadedFakeFreeSwitch` (threaded.py) runs it in
a thread for synchronous tests. Run standalone with `python -m fsguard_cli.simulator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid as uuidlib
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fsguard_supervisor.esl_protocol import encode_frame, event_frame

from .capture import CapturedEvent, first, load_capture, rewrite_source_ip
from .events import STATUS_TEXT, EventLike, background_job, heartbeat
from .protocol import (
    CMD_END,
    GOODBYE,
    REJECTION,
    Client,
    api_output,
    subscribe,
)
from .sofia import SimGateway


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
        self._clients: set[Client] = set()
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
        outputs: dict[Client, list[bytes]] = {c: [] for c in clients}
        delivered = 0
        for headers, body in batch:
            if first(headers, "Event-Name") == "CHANNEL_CREATE":
                uid = first(headers, "Unique-ID")
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
        client = Client(writer)
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
                m = CMD_END.search(buf)
                while m is None:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    buf = (buf + chunk).lstrip(b"\r\n")
                    m = CMD_END.search(buf)
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

    def _reply(self, client: Client, text: str) -> None:
        client.write(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())

    async def _command(self, client: Client, command: str, extra: dict[str, str]) -> bool:
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
            reply = subscribe(client, rest.split())
            if reply.startswith("+OK"):
                self.subscriptions_total += 1
            self._reply(client, reply)
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

    def _api_output(self, command: str) -> str:
        return api_output(command, self.api_responses, self.gateways, self.channels)
