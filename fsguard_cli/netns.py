"""Network-namespace helpers: kernel work (ipset, iptables, sockets) in throwaway namespaces.

Used by `fsguard demo` and by every kernel test (tests/netns_helpers.py re-exports them).

Everything kernel-related happens inside namespaces created here and always
deleted afterwards, so neither the demo nor the tests touch the host's own sets
or rules.

    with netns("fw") as ns:
        run_in(ns, ["ipset", "list"])
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


@functools.cache
def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (not root, tools missing), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN / CAP_SYS_ADMIN)"
    missing = [b for b in ("ip", "ipset", "iptables", "ip6tables") if shutil.which(b) is None]
    if missing:
        return f"network namespaces need {', '.join(missing)} on PATH"
    name = _unique("fsgprobe")
    try:
        proc = subprocess.run(
            ["ip", "netns", "add", name], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` failed: {exc}"
    if proc.returncode != 0:
        return f"`ip netns add` failed: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


@contextmanager
def netns(prefix: str = "fsg") -> Iterator[str]:
    """A fresh, uniquely named namespace with lo up; always deleted on exit."""
    name = _unique(prefix)
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def run_in(ns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """subprocess.run inside `ns` (capture, text, 10 s timeout, no check unless asked)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 10)
    kw.setdefault("check", False)
    result: subprocess.CompletedProcess[str] = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], **kw
    )
    return result


def _addr(ns: str, dev: str, cidr: str) -> None:
    extra = ["nodad"] if ":" in cidr else []
    _ip("-n", ns, "addr", "add", cidr, "dev", dev, *extra)


def veth_pair(
    ns_a: str, addr_a_cidr: str, ns_b: str, addrs_b_cidrs: Sequence[str]
) -> tuple[str, str]:
    """Join two namespaces with a veth pair; returns (ifname in a, ifname in b).

    The interfaces disappear with their namespaces.
    """
    tag = secrets.token_hex(3)
    if_a, if_b = f"fa{tag}", f"fb{tag}"
    _ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    _addr(ns_a, if_a, addr_a_cidr)
    for cidr in addrs_b_cidrs:
        _addr(ns_b, if_b, cidr)
    _ip("-n", ns_a, "link", "set", if_a, "up")
    _ip("-n", ns_b, "link", "set", if_b, "up")
    return if_a, if_b


def socket_in(ns: str, family: int, type: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace `ns` (it stays there for its whole life).

    setns() changes only the calling thread's namespace, so a throwaway thread
    enters `ns`, creates the socket and ends; the caller's thread is untouched.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["sock"] = socket.socket(family, type, proto)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"setns-{ns}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    sock: socket.socket = box["sock"]
    return sock


def udp_reaches(
    ns_src: str, src_ip: str, ns_dst: str, dst_ip: str, port: int, timeout: float = 2.0
) -> bool:
    """Send UDP from `src_ip` (bound, in ns_src) to `dst_ip:port` (in ns_dst).

    True when a datagram with our token from src_ip arrived within `timeout`. The token is
    re-sent every 0.1 s for the whole wait, so neighbour resolution or a busy machine
    cannot cause a false negative; a positive answer returns at the first arrival.
    """
    family = socket.AF_INET6 if ":" in dst_ip else socket.AF_INET
    token = secrets.token_bytes(8)
    rx = socket_in(ns_dst, family, socket.SOCK_DGRAM)
    tx = socket_in(ns_src, family, socket.SOCK_DGRAM)
    try:
        rx.bind((dst_ip, port))
        rx.settimeout(0.1)
        tx.bind((src_ip, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tx.sendto(token, (dst_ip, port))
            try:
                data, peer = rx.recvfrom(64)
            except TimeoutError:
                continue
            if data == token and peer[0] == src_ip:
                return True
        return False
    finally:
        rx.close()
        tx.close()
