"""shared.sdnotify against real AF_UNIX datagram sockets bound by the test."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared import sdnotify


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield str(path), sock
    finally:
        sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    if not sys.platform.startswith("linux"):
        pytest.skip("abstract unix socket names exist only on Linux")
    name = f"fsguard-test-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        yield "@" + name, sock
    finally:
        sock.close()


CALLS: list[tuple[Callable[[], bool], bytes]] = [
    (sdnotify.ready, b"READY=1"),
    (sdnotify.stopping, b"STOPPING=1"),
    (sdnotify.watchdog, b"WATCHDOG=1"),
    (lambda: sdnotify.status("4 workers\nup"), b"STATUS=4 workers up"),
    (lambda: sdnotify.notify("RELOADING=1"), b"RELOADING=1"),
]


@pytest.mark.parametrize("socket_fixture", ["path_socket", "abstract_socket"])
@pytest.mark.parametrize(("call", "expected"), CALLS)
def test_socket_receives_exact_datagram(
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    socket_fixture: str,
    call: Callable[[], bool],
    expected: bytes,
) -> None:
    """On a path socket and on an abstract one alike."""
    name, sock = request.getfixturevalue(socket_fixture)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert call() is True
    assert sock.recv(4096) == expected


def test_abstract_name_is_not_a_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, abstract_socket: tuple[str, socket.socket]
) -> None:
    # '@name' must map to the abstract namespace, not to a file called '@name'.
    name, sock = abstract_socket
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sdnotify.ready() is True
    assert sock.recv(4096) == b"READY=1"
    assert list(tmp_path.iterdir()) == []


def test_unset_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.stopping() is False
    assert sdnotify.status("x") is False
    assert sdnotify.watchdog() is False


def test_empty_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.ready() is False


def test_missing_socket_returns_false_without_raising(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.ready() is False


def test_unsupported_address_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert sdnotify.ready() is False


def test_no_file_descriptor_leak(
    monkeypatch: pytest.MonkeyPatch, path_socket: tuple[str, socket.socket]
) -> None:
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("/proc/self/fd not available to count descriptors")
    name, sock = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    before = len(list(fd_dir.iterdir()))
    for _ in range(50):
        assert sdnotify.watchdog() is True
        sock.recv(64)
    assert len(list(fd_dir.iterdir())) == before
