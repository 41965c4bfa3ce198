"""`fsguard capture`: record a FreeSWITCH Event Socket stream for `fsguard replay`.

Connects to the config's `security.esl_host:esl_port`, authenticates with `esl_password`,
subscribes with `event <format> ALL` and writes every byte received, from the
`auth/request` greeting on, unmodified to the output file (the format of
tests/fixtures/capture_*.bin). Stops after `--duration`, on SIGINT/SIGTERM, or when
FreeSWITCH closes the connection; on a planned stop it sends `exit` and keeps the
goodbye frames.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import time
from types import FrameType
from typing import BinaryIO

from fsguard_supervisor.esl_protocol import Frame, FrameParser, ProtocolError
from shared.config import Config

CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 5.0


class CaptureFailed(Exception):
    pass


class _Stream:
    """Reads from the socket, writes every byte to the file, frames the replies."""

    def __init__(self, sock: socket.socket, out: BinaryIO) -> None:
        self.sock = sock
        self.out = out
        self.parser = FrameParser()
        self.frames: list[Frame] = []
        self.bytes = 0
        self.events = 0
        self.closed = False
        self.ended_by_server = False

    def read_once(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            return
        except OSError as exc:
            raise CaptureFailed(f"connection error: {exc}") from exc
        if not data:
            self.closed = True
            return
        self.out.write(data)
        self.bytes += len(data)
        try:
            for frame in self.parser.feed(data):
                if frame.content_type.startswith("text/event-"):
                    self.events += 1
                else:
                    self.frames.append(frame)
        except ProtocolError as exc:
            raise CaptureFailed(f"bad ESL framing from the server: {exc}") from exc

    def expect(self, content_type: str, timeout: float = REPLY_TIMEOUT) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if frame.content_type == content_type:
                    del self.frames[: i + 1]
                    return frame
                if frame.content_type in ("text/rude-rejection", "text/disconnect-notice"):
                    raise CaptureFailed(f"the server refused the connection "
                                        f"({frame.content_type}): "
                                        f"{frame.body.decode('utf-8', 'replace').strip()}")
            remaining = deadline - time.monotonic()
            if self.closed or remaining <= 0:
                raise CaptureFailed(f"no {content_type} from the server")
            self.read_once(remaining)

    def send(self, command: str) -> None:
        self.sock.sendall(command.encode() + b"\n\n")


def capture(
    config: Config, out: BinaryIO, *, fmt: str = "json", duration: float | None = None,
    stop: list[bool] | None = None,
) -> _Stream:
    sec = config.security
    try:
        sock = socket.create_connection((sec.esl_host, sec.esl_port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise CaptureFailed(
            f"cannot connect to FreeSWITCH ESL at {sec.esl_host}:{sec.esl_port}: {exc}"
        ) from exc
    stream = _Stream(sock, out)
    stop = stop if stop is not None else [False]
    try:
        stream.expect("auth/request")
        stream.send(f"auth {sec.esl_password}")
        reply = stream.expect("command/reply")
        if not (reply.header("Reply-Text") or "").startswith("+OK"):
            raise CaptureFailed(f"authentication refused: {reply.header('Reply-Text')}")
        stream.send(f"event {fmt} ALL")
        reply = stream.expect("command/reply")
        if not (reply.header("Reply-Text") or "").startswith("+OK"):
            raise CaptureFailed(f"subscription refused: {reply.header('Reply-Text')}")
        print(f"fsguard capture: connected to {sec.esl_host}:{sec.esl_port}, "
              f"subscribed with `event {fmt} ALL`", file=sys.stderr, flush=True)
        deadline = None if duration is None else time.monotonic() + duration
        last_flush = time.monotonic()
        while not stream.closed and not stop[0]:
            wait = 0.5
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            stream.read_once(wait)
            if time.monotonic() - last_flush > 1.0:
                out.flush()
                last_flush = time.monotonic()
        stream.ended_by_server = stream.closed
        if not stream.closed:
            with contextlib.suppress(OSError, CaptureFailed):
                stream.send("exit")
                end = time.monotonic() + 2.0
                while not stream.closed and time.monotonic() < end:
                    stream.read_once(end - time.monotonic())
    finally:
        out.flush()
        sock.close()
    return stream


def main(config: Config, path: str, *, fmt: str = "json", duration: float | None = None) -> int:
    stop = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with open(path, "wb") as out:
            stream = capture(config, out, fmt=fmt, duration=duration, stop=stop)
    except CaptureFailed as exc:
        print(f"fsguard capture: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fsguard capture: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    why = "the server closed the connection" if stream.ended_by_server else "stopped"
    print(f"fsguard capture: {why}; wrote {stream.bytes} bytes, {stream.events} events to "
          f"{path} (replay it with `fsguard replay {path}`)", file=sys.stderr)
    return 0
