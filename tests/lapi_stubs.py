"""Stand-ins for a CrowdSec LAPI on loopback, for the fleet tests: a healthy one that
records what it is sent (FakeLapi) and a misbehaving one (BadServer)."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any


def http_reply(status: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 response carrying the JSON `body`."""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class LoopbackServer:
    """A TCP listener on 127.0.0.1 (`port`) whose thread hands each connection to
    `handle`; `close` stops it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class BadServer(LoopbackServer):
    """Answers every request with `reply` (raw bytes), or never answers (reply=None)."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.conns: list[socket.socket] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        self.conns.append(conn)
        conn.recv(65536)
        if self.reply is not None:
            conn.sendall(self.reply)
            conn.close()

    def close(self) -> None:
        super().close()
        for conn in self.conns:
            conn.close()


class FakeLapi(LoopbackServer):
    """Answers login, alerts and the stream like a healthy LAPI; records each request."""

    def __init__(self, stream: bytes = b'{"new":null,"deleted":null}') -> None:
        self.stream = stream
        self.requests: list[tuple[str, str, Any]] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                           if h.lower().startswith(b"content-length:")), 0)  # fmt: skip
            while len(body) < length:
                body += conn.recv(65536)
            method, path = head.split(b" ")[:2]
            payload = json.loads(body) if body else None
            self.requests.append((method.decode(), path.decode(), payload))
            if path.startswith(b"/v1/watchers/login"):
                answer = b'{"code":200,"expire":"2099-01-01T00:00:00Z","token":"t"}'
            elif path.startswith(b"/v1/alerts"):
                answer = json.dumps([str(i) for i in range(len(payload or []))]).encode()
            else:
                answer, self.stream = self.stream, b'{"new":null,"deleted":null}'
            conn.sendall(http_reply("200 OK", answer))

    def alert_posts(self) -> list[Any]:
        return [p for m, path, p in self.requests if path.startswith("/v1/alerts")]
