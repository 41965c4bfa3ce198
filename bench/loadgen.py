"""ESL load generator for benchmarks: a minimal FreeSWITCH stand-in that answers the
handshake and commands, then writes a pre-built byte stream of JSON events as fast as
the client reads it. Built to cost almost no CPU so the measurement is fsguard's.

Mix (as the Go program's RealisticMix benchmark): 70% sofia::register from 256
addresses, 15% CHANNEL_CREATE, 10% sofia::register_failure from 32 addresses,
5% sofia::wrong_call_state.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid
from typing import Any

CORE_UUID = "a1fcc67f-f493-4124-8680-ab54585ddc52"


def _std(
    name: str, subclass: str | None, seq: int, file: str, func: str, line: int
) -> dict[str, str]:
    now_us = int(time.time() * 1_000_000)
    head: dict[str, str] = {}
    if subclass:
        head["Event-Subclass"] = subclass
    head.update({
        "Event-Name": name,
        "Core-UUID": CORE_UUID,
        "FreeSWITCH-Hostname": "pbx01",
        "FreeSWITCH-Switchname": "pbx01",
        "FreeSWITCH-IPv4": "192.0.2.10",
        "FreeSWITCH-IPv6": "2001:db8::10",
        "Event-Date-Local": "2026-11-25 00:50:01",
        "Event-Date-GMT": "Wed, 25 Nov 2026 00:50:01 GMT",
        "Event-Date-Timestamp": str(now_us),
        "Event-Calling-File": file,
        "Event-Calling-Function": func,
        "Event-Calling-Line-Number": str(line),
        "Event-Sequence": str(seq),
    })
    return head


def sofia_reg(
    subclass: str, line: int, ip: str, user: str, seq: int, headers: dict[str, str]
) -> dict[str, str]:
    """A sofia::`subclass` event from sofia_reg.c: `user` at `ip`, plus `headers`."""
    ev = _std("CUSTOM", f"sofia::{subclass}", seq, "sofia_reg.c",
              "sofia_reg_handle_register_token", line)
    ev.update({"profile-name": "internal", "to-user": user, "to-host": "pbx.example.com",
               "network-ip": ip, "network-port": "5060"})  # fmt: skip
    ev.update(headers)
    return ev


def register(ip: str, user: str, seq: int) -> dict[str, str]:
    return sofia_reg("register", 2059, ip, user, seq, {
        "from-user": user, "from-host": "pbx.example.com",
        "presence-hosts": "n/a", "contact": f'"" <sip:{user}@{ip}:5060>',
        "call-id": f"{uuid.uuid4()}", "rpid": "unknown", "status": "Registered(UDP)",
        "expires": "300", "username": user, "realm": "pbx.example.com",
        "user-agent": "Yealink SIP-T46S 66.86.0.15", "sip_auth_username": user,
        "user_name": user, "domain_name": "pbx.example.com", "user_context": "default",
    })  # fmt: skip


def channel_create(ip: str, user: str, seq: int) -> dict[str, str]:
    ev = _std("CHANNEL_CREATE", None, seq, "switch_core_state_machine.c",
              "switch_core_session_run", 626)
    call = str(uuid.uuid4())
    ev.update({
        "Channel-State": "CS_INIT", "Channel-Call-State": "DOWN", "Channel-State-Number": "2",
        "Channel-Name": f"sofia/internal/{user}@pbx.example.com", "Unique-ID": call,
        "Call-Direction": "inbound", "Answer-State": "ringing",
        "Caller-Direction": "inbound", "Caller-Username": user, "Caller-Dialplan": "XML",
        "Caller-Caller-ID-Number": user, "Caller-Network-Addr": ip,
        "Caller-Destination-Number": "9999", "Caller-Unique-ID": call,
        "Caller-Source": "mod_sofia", "Caller-Context": "default",
        "variable_sofia_profile_name": "internal", "variable_sip_network_ip": ip,
        "variable_sip_received_ip": ip, "variable_sip_from_user": user,
        "variable_sip_from_host": "pbx.example.com", "variable_sip_user_agent": "Yealink SIP-T46S",
        "variable_sip_authorized": "true", "variable_sip_auth_username": user,
    })
    return ev


def register_failure(ip: str, user: str, seq: int) -> dict[str, str]:
    return sofia_reg("register_failure", 1792, ip, user, seq,
                     {"user-agent": "Z 5.5.5", "registration-type": "REGISTER"})


def wrong_call_state(ip: str, user: str, seq: int) -> dict[str, str]:
    ev = _std("CUSTOM", "sofia::wrong_call_state", seq, "mod_sofia.c", "sofia_on_hangup", 672)
    ev.update({"from_user": user, "network_ip": ip, "network_port": "5060"})
    return ev


def frame(event: dict[str, Any]) -> bytes:
    body = json.dumps(event, separators=(",", ":")).encode()
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n%s" % (len(body), body)


def realistic_mix(count: int, seed: int = 1) -> bytes:
    """`count` events of the realistic mix as one ESL byte stream."""
    rng = random.Random(seed)
    legit = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(256)]
    attackers = [f"203.0.115.{i + 1}" for i in range(32)]
    out = []
    for seq in range(count):
        roll = rng.random()
        if roll < 0.70:
            i = rng.randrange(256)
            ev = register(legit[i], f"user{i}", seq)
        elif roll < 0.85:
            i = rng.randrange(256)
            ev = channel_create(legit[i], f"user{i}", seq)
        elif roll < 0.95:
            ev = register_failure(rng.choice(attackers), f"{rng.randrange(1000, 1100)}", seq)
        else:
            ev = wrong_call_state(rng.choice(attackers), "100", seq)
        out.append(frame(ev))
    return b"".join(out)


class LoadServer:
    """One-client ESL server: handshake, command replies, and bulk event writes."""

    def __init__(self, password: str = "ClueCon", sock: socket.socket | None = None) -> None:
        self.password = password
        if sock is None:
            self.listener = socket.create_server(("127.0.0.1", 0))
        else:
            sock.bind(("127.0.0.1", 0))
            sock.listen(4)
            self.listener = sock
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        self.commands: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _send(self, data: bytes) -> None:
        assert self.conn is not None
        with self.lock:
            self.conn.sendall(data)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = conn
        self._send(b"Content-Type: auth/request\n\n")
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n\n" in buf:
                cmd, buf = buf.split(b"\n\n", 1)
                line = cmd.decode(errors="replace").strip().splitlines()[0] if cmd.strip() else ""
                if not line:
                    continue
                self.commands.append(line)
                if line.startswith("auth "):
                    ok = line[5:] == self.password
                    self._send(b"Content-Type: command/reply\nReply-Text: "
                               + (b"+OK accepted" if ok else b"-ERR invalid") + b"\n\n")
                elif line.startswith("event "):
                    self._send(b"Content-Type: command/reply\n"
                               b"Reply-Text: +OK event listener enabled json\n\n")
                    self.subscribed.set()
                elif line.startswith("api "):
                    body = b"+OK\n"
                    self._send(b"Content-Type: api/response\nContent-Length: %d\n\n%s"
                               % (len(body), body))
                else:
                    self._send(
                        b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"
                    )

    def send(self, stream: bytes, chunk: int = 1 << 20) -> None:
        for start in range(0, len(stream), chunk):
            self._send(stream[start:start + chunk])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
