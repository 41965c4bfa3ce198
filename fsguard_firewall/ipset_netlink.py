"""ipset add/del over netlink (NETLINK_NETFILTER, the ipset subsystem), without a process.

`ipset restore` costs a fork and an exec per batch (2-4 ms on a busy 2-core box, most
of the time from a threshold event to the kernel entry); the same kernel call over a
netlink socket costs tens of microseconds. Messages carry exactly what `ipset restore
-exist` sends: ADD without NLM_F_EXCL (an existing entry gets its timeout refreshed),
DEL ignoring absent entries. Anything the kernel refuses is reported per element, and
the caller (kernel.KernelFirewall) retries those through `ipset restore`, whose error
text it already reports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
_SUBSYS_IPSET = 6
_CMD_ADD, _CMD_DEL = 9, 10
_PROTOCOL = 6  # ipset netlink protocol understood by every kernel since 2.6.39
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_NLMSG_ERROR = 2
_NESTED, _NET_ORDER = 0x8000, 0x4000
# attributes: command level / inside DATA / inside IP
_A_PROTOCOL, _A_SETNAME, _A_DATA = 1, 2, 7
_A_IP, _A_CIDR, _A_TIMEOUT = 1, 3, 6
_A_IPV4, _A_IPV6 = 1, 2
_IPSET_ERR_EXIST = 4103  # DEL of an absent element
# requests per send: each ack is one skb (~1 KiB of receive buffer), beyond the default
# buffer the kernel drops acks (ENOBUFS)
_CHUNK = 64
_SOL_NETLINK, _NETLINK_CAP_ACK = 270, 10

Element = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv6Network


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(seq: int, op: str, set_name: str, elem: Element, timeout: int | None) -> bytes:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    cidr: int | None = None
    if isinstance(elem, ipaddress.IPv6Network):
        ip, cidr = elem.network_address, elem.prefixlen
    else:
        ip = elem
    v4 = isinstance(ip, ipaddress.IPv4Address)
    family = socket.AF_INET if v4 else socket.AF_INET6
    addr = _attr((_A_IPV4 if v4 else _A_IPV6) | _NET_ORDER, ip.packed)
    data = _attr(_A_IP | _NESTED, addr)
    if cidr is not None:
        data += _attr(_A_CIDR, bytes((cidr,)))
    if timeout is not None:
        data += _attr(_A_TIMEOUT | _NET_ORDER, struct.pack(">I", timeout))
    body = struct.pack("=BBH", family, 0, 0)
    body += _attr(_A_PROTOCOL, bytes((_PROTOCOL,)))
    body += _attr(_A_SETNAME, set_name.encode() + b"\0")
    body += _attr(_A_DATA | _NESTED, data)
    cmd = _CMD_ADD if op == "add" else _CMD_DEL
    return struct.pack("=IHHII", 16 + len(body), (_SUBSYS_IPSET << 8) | cmd,
                       _NLM_F_REQUEST | _NLM_F_ACK, seq, 0) + body


class IpsetNetlink:
    """One netlink socket (by default in the calling process's network namespace)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock = sock
        self.sock.settimeout(5.0)
        with contextlib.suppress(OSError):  # acks without a copy of the request
            sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def apply(self, ops: Sequence[tuple[str, str, Element, int | None]]) -> list[int]:
        """Run (op "add"/"del", set name, element, timeout or None) in order.

        Returns one error number per op: 0 applied, else the kernel's (an errno, or an
        ipset error >= 4096). A DEL of an absent element counts as applied, as with
        `ipset -exist`. Raises OSError when the socket itself fails.
        """
        results = [0] * len(ops)
        start = 0
        while start < len(ops):
            batch: list[bytes] = []
            base = self._seq + 1
            end = start
            while end < len(ops) and end - start < _CHUNK:
                op, name, elem, timeout = ops[end]
                msg = _message(base + end - start, op, name, elem, timeout)
                batch.append(msg)
                end += 1
            self._seq = base + (end - start) - 1
            self.sock.send(b"".join(batch))
            self._collect(base, end - start, results, start, ops)
            start = end
        return results

    def _collect(self, base: int, count: int, results: list[int], offset: int,
                 ops: Sequence[tuple[str, str, Element, int | None]]) -> None:
        pending = count
        while pending:
            data = self.sock.recv(65536)
            pos = 0
            while pos + 16 <= len(data):
                length, mtype, _, seq, _ = struct.unpack_from("=IHHII", data, pos)
                if length < 16:
                    raise OSError("malformed netlink reply")
                index = seq - base
                if mtype == _NLMSG_ERROR and 0 <= index < count:
                    (err,) = struct.unpack_from("=i", data, pos + 16)
                    code = -err
                    if code == _IPSET_ERR_EXIST and ops[offset + index][0] == "del":
                        code = 0
                    results[offset + index] = code
                    pending -= 1
                pos += (length + 3) & ~3


def describe(code: int) -> str:
    return os.strerror(code) if code < 4096 else f"ipset error {code}"


class Line(Protocol):
    """What NetlinkPath needs of a kernel.KernelFirewall line."""

    op: str
    set_name: str
    elem: Element | None
    timeout: int | None


L = TypeVar("L", bound=Line)


class NetlinkPath:
    """KernelFirewall's netlink side: opened on first use; a failure of the socket hands
    the lines back for ipset restore (and a failure to open it disables the path)."""

    def __init__(self, factory: Callable[[], IpsetNetlink] | None) -> None:
        self._factory = factory
        self._nl: IpsetNetlink | None = None

    def available(self) -> bool:
        if self._nl is None and self._factory is not None:
            try:
                self._nl = self._factory()
            except OSError as exc:
                self._factory = None
                log.warning("ipset over netlink unavailable (%s): using ipset restore", exc)
        return self._nl is not None

    def apply_lines(self, lines: list[L]) -> tuple[list[L], int]:
        """Apply; return (lines the kernel refused, for ipset restore to retry and
        report, number applied)."""
        assert self._nl is not None
        ops = [(ln.op, ln.set_name, ln.elem, ln.timeout) for ln in lines if ln.elem is not None]
        if len(ops) != len(lines):
            return lines, 0
        try:
            codes = self._nl.apply(ops)
        except OSError as exc:
            log.warning("ipset over netlink failed (%s): retrying with ipset restore", exc)
            self._nl.close()
            self._nl = None
            return lines, 0
        refused = [ln for ln, code in zip(lines, codes, strict=True) if code]
        return refused, len(lines) - len(refused)
