"""Minimal sd_notify(3) client: no dependency, never raises.

systemd (Type=notify units) passes the address of a unix datagram socket in
$NOTIFY_SOCKET: a filesystem path, or an abstract name written with a leading '@'.
Outside systemd (tests, docker, `fsguard run`) the variable is unset and every call
is a cheap no-op returning False.
"""

from __future__ import annotations

import os
import socket


def _address(name: str) -> str | bytes | None:
    if name.startswith("@"):
        # Abstract namespace: the kernel address starts with a NUL byte.
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None  # vsock: and other forms are not used by fsguard's units


def notify(state: str) -> bool:
    """Send one notification such as "READY=1". True when it was delivered."""
    name = os.environ.get("NOTIFY_SOCKET", "")
    if not name:
        return False
    address = _address(name)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def ready() -> bool:
    """Tell systemd that start-up is finished (Type=notify)."""
    return notify("READY=1")


def stopping() -> bool:
    """Tell systemd that an orderly shutdown has begun."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Free-form one-line status shown by `systemctl status`."""
    return notify("STATUS=" + text.replace("\n", " "))


def watchdog() -> bool:
    """Keep-alive ping for units with WatchdogSec=."""
    return notify("WATCHDOG=1")
