"""The API process: uvicorn serving create_app(config), stopped cleanly by SIGTERM/SIGINT.

uvicorn's own signal capture re-raises the signal after shutdown, which would end the
process with "killed by SIGTERM"; we install our own handlers so a requested stop exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from collections.abc import Generator

import uvicorn

from fsguard_api.app import configured_token, create_app
from shared import sdnotify
from shared.config import Config, ConfigError

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 5


class Server(uvicorn.Server):
    """uvicorn.Server without its signal capture (handled in `serve`), telling systemd
    READY=1 once listening and STOPPING=1 when it starts to shut down (Type=notify unit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            sdnotify.ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        sdnotify.stopping()
        await super().shutdown(sockets)


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(config: Config) -> None:
    if not is_loopback(config.server.host) and not configured_token(config):
        log.warning(
            "API listening on non-loopback address %s without an API token: "
            "set server.api_token (or api_token_file); state-changing calls are "
            "limited to allowed_api_ips only",
            config.server.host,
        )


def build_server(config: Config) -> uvicorn.Server:
    uv_config = uvicorn.Config(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        proxy_headers=False,  # the source address is the TCP peer, never X-Forwarded-For
        server_header=False,
        access_log=config.server.log_requests,
        log_config=None,  # keep the process's logging setup
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return Server(uv_config)


async def serve(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
    """Run until SIGTERM/SIGINT (main thread) or until server.should_exit is set."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    first: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        """The first signal stops gracefully; the same signal again forces the exit.

        Ctrl-C on `fsguard run` sends SIGINT to the whole tree and the supervisor then
        sends SIGTERM: that pair is one stop, not an impatient operator, so the lifespan
        still shuts down (a forced exit cancels it, which uvicorn logs as an ERROR).
        """
        if server.should_exit and first and first[0] == sig:
            server.force_exit = True
        if not first:
            first.append(sig)
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, stop, sig)
            installed.append(sig)
    try:
        await server.serve(sockets)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(config: Config) -> int:
    """Serve the API on config.server.host:port. 0 after a clean stop, 1 if it cannot start."""
    try:
        warn_if_exposed(config)
        server = build_server(config)
    except ConfigError as exc:  # e.g. an unreadable or empty server.api_token_file
        log.error("%s", exc)
        return 2
    try:
        asyncio.run(serve(server))
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        return exc.code if isinstance(exc.code, int) else 1
    return 0 if server.started else 1
