"""The REST API of a tree running in a namespace, reached over real HTTP from the test.

The API listens on the namespace's loopback; a small TCP forwarder in the test process
makes it reachable from the host's loopback, connecting from 127.0.0.1 (allow-listed)
or another source address (not).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx

from tests.netns_helpers import socket_in
from tests.system_helpers import wait_for


class Forwarder:
    """Host loopback port -> namespace 127.0.0.1:API_PORT, connecting from `source`."""

    def __init__(self, ns: str, port: int, source: str = "127.0.0.1") -> None:
        self.ns, self.port, self.source = ns, port, source
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="forwarder")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket_in(self.ns, socket.AF_INET, socket.SOCK_STREAM)
                up.bind((self.source, 0))
                up.connect(("127.0.0.1", self.port))
            except OSError:
                client.close()
                continue
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stop = True
        self.listener.close()


@contextmanager
def api_client(ns: str, port: int, timeout: float = 10) -> Iterator[tuple[str, httpx.Client]]:
    """A forwarder to the API on `port` in `ns` and an httpx client on it, once `/health`
    answers 200 (a test failure if not within 15 s); both closed after."""
    fwd = Forwarder(ns, port)
    client = httpx.Client(base_url=fwd.url, timeout=timeout)
    try:

        def api_up() -> bool:
            try:
                return client.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(api_up, 15), "API never answered"
        yield fwd.url, client
    finally:
        client.close()
        fwd.close()
