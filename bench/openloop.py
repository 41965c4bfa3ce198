"""Open-loop ESL sender and kernel-set probe for bench_honest.

The sender behaves like FreeSWITCH's mod_event_socket towards a slow consumer: events
are produced at a fixed offered rate whatever the reader does, written with non-blocking
sends, and queued up to a bounded depth; beyond that they are dropped and counted (the
real server drops them and, after MAX_MISSED of them, disconnects the listener). The
queue is counted in bytes of whole frames, so a frame is either sent whole or dropped.
"""

from __future__ import annotations

import bisect
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# --- kernel set probe (ipset netlink IPSET_CMD_TEST) ----------------------------------
NETLINK_NETFILTER = 12
_NFNL_SUBSYS_IPSET = 6
_IPSET_CMD_TEST = 11
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_NLMSG_ERROR = 2
_NLA_F_NESTED, _NLA_F_NET_BYTEORDER = 0x8000, 0x4000


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


class IpsetProbe:
    """`ipset test SET IP` over netlink (~20 µs, no fork), on a socket from the namespace."""

    def __init__(self, sock: socket.socket, set_name: str) -> None:
        self.sock = sock
        self.set_name = set_name.encode() + b"\0"
        self.seq = 0

    def contains(self, ip: str) -> bool:
        self.seq += 1
        packed = socket.inet_aton(ip)
        data = _attr(7 | _NLA_F_NESTED,
                     _attr(1 | _NLA_F_NESTED, _attr(1 | _NLA_F_NET_BYTEORDER, packed)))
        body = struct.pack("=BBH", socket.AF_INET, 0, 0)
        body += _attr(1, b"\x06") + _attr(2, self.set_name) + data
        hdr = struct.pack("=IHHII", 16 + len(body), (_NFNL_SUBSYS_IPSET << 8) | _IPSET_CMD_TEST,
                          _NLM_F_REQUEST | _NLM_F_ACK, self.seq, 0)
        self.sock.send(hdr + body)
        reply = self.sock.recv(65536)
        _, mtype = struct.unpack_from("=IH", reply)
        if mtype != _NLMSG_ERROR:
            raise RuntimeError(f"unexpected netlink reply type {mtype}")
        (err,) = struct.unpack_from("=i", reply, 16)
        if err == 0:
            return True
        if -err >= 4096:  # IPSET_ERR_EXIST and friends: not in the set
            return False
        raise OSError(-err, os.strerror(-err))


# --- open-loop sender -------------------------------------------------------------------
@dataclass
class StepResult:
    offered_rate: int
    frames: int
    sent: int = 0
    dropped_at_source: int = 0
    max_backlog_bytes: int = 0
    seconds: float = 0.0
    mark_times: dict[int, float] = field(default_factory=dict)  # frame index -> sent at
    dropped_marks: list[int] = field(default_factory=list)


class OpenLoopSender:
    """Writes `stream` (frames ending at `ends`) at `rate` frames/s through `conn`."""

    def __init__(self, conn: socket.socket, lock: threading.Lock, queue_bytes: int) -> None:
        self.conn = conn
        self.lock = lock
        self.queue_bytes = queue_bytes
        self._inject: deque[tuple[bytes, Callable[[float], None]]] = deque()

    def inject(self, data: bytes, on_sent: Callable[[float], None]) -> None:
        """Write `data` (whole frames) at the next frame boundary; `on_sent(t)` after."""
        self._inject.append((data, on_sent))

    def _send_all(self, data: memoryview) -> None:
        while data:
            try:
                n = self.conn.send(data, socket.MSG_DONTWAIT)
                data = data[n:]
            except BlockingIOError:
                select.select([], [self.conn], [], 0.01)

    def run(
        self, stream: bytes, ends: list[int], rate: int, marks: tuple[int, ...] = (),
        on_mark: Callable[[int, float], None] | None = None,
    ) -> StepResult:
        """Offer len(ends) frames at `rate`/s; returns when all are sent or dropped."""
        n = len(ends)
        res = StepResult(offered_rate=rate, frames=n)
        view = memoryview(stream)
        segs: deque[list[int]] = deque()  # [start, end) byte ranges still to send
        backlog = 0
        queued = 0  # frames offered so far
        mark_ends = sorted((ends[i], i) for i in marks)
        mi = 0
        markset = set(marks)
        t0 = time.perf_counter()
        holding = False
        try:
            while queued < n or segs or self._inject:
                now = time.perf_counter()
                due = n if rate <= 0 else min(n, int((now - t0) * rate))
                while queued < due:
                    start = ends[queued - 1] if queued else 0
                    # whole frames up to `due` that fit in the queue
                    limit = start + max(0, self.queue_bytes - backlog)
                    last = min(due, bisect.bisect_right(ends, limit, queued))
                    if last > queued:
                        end = ends[last - 1]
                        if segs and segs[-1][1] == start:
                            segs[-1][1] = end
                        else:
                            segs.append([start, end])
                        backlog += end - start
                        queued = last
                    else:  # queue full: FreeSWITCH drops the event
                        res.dropped_at_source += 1
                        if queued in markset:
                            res.dropped_marks.append(queued)
                        queued += 1
                res.max_backlog_bytes = max(res.max_backlog_bytes, backlog)
                if self._inject and (not segs or segs[0][0] in _boundaries(ends, segs[0][0])):
                    with self.lock:
                        while self._inject:
                            data, cb = self._inject.popleft()
                            self._send_all(memoryview(data))
                            cb(time.perf_counter())
                while segs:
                    s = segs[0]
                    if not holding:  # replies to fsguard's commands wait for a frame boundary
                        self.lock.acquire()
                        holding = True
                    try:
                        sent = self.conn.send(view[s[0] : s[1]], socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        if _boundaries(ends, s[0]):
                            self.lock.release()
                            holding = False
                        break
                    s[0] += sent
                    backlog -= sent
                    if _boundaries(ends, s[0]):
                        self.lock.release()
                        holding = False
                    while mi < len(mark_ends) and mark_ends[mi][0] <= s[0]:
                        if mark_ends[mi][1] not in res.dropped_marks:
                            at = time.perf_counter()
                            res.mark_times[mark_ends[mi][1]] = at
                            if on_mark is not None:
                                on_mark(mark_ends[mi][1], at)
                        mi += 1
                    if s[0] >= s[1]:
                        segs.popleft()
                    else:
                        break
                if queued >= n and not segs and not self._inject:
                    break
                time.sleep(0.0005)
        finally:
            if holding:
                self.lock.release()
        res.seconds = time.perf_counter() - t0
        res.sent = n - res.dropped_at_source
        return res


def _boundaries(ends: list[int], pos: int) -> tuple[int, ...]:
    """(pos,) when pos is a frame boundary (start of stream or end of a frame), else ()."""
    if pos == 0:
        return (0,)
    i = bisect.bisect_left(ends, pos)
    return (pos,) if i < len(ends) and ends[i] == pos else ()


def build_stream(frames: list[bytes]) -> tuple[bytes, list[int]]:
    ends, total = [], 0
    for f in frames:
        total += len(f)
        ends.append(total)
    return b"".join(frames), ends
