"""Fan ESL events out to the worker that owns their source IP.

This is the supervisor's per-event hot path: a bytes search for the source-IP
header (no JSON parse), a dict lookup for the shard, and one non-blocking
ZeroMQ send per shard per socket read. A full queue is a counted drop, never
a stall: the ESL reader must keep up with FreeSWITCH or FreeSWITCH will
disconnect us after 500 lost events.

Each worker's queue is bounded twice: in messages (the ZeroMQ high-water mark,
`workers.queue_size`) and in bytes (`workers.queue_bytes`), because one message
is a whole socket read, up to 256 KiB. The bytes in flight to a worker are the
batches sent and not yet acknowledged by the worker's `processed` counter
(refreshed by the supervisor once a second).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import zmq

from shared import addresses
from shared.iputil import find_source_ip, shard_of
from shared.messages import pack_event_batch

log = logging.getLogger(__name__)

# Events without a usable source IP (HEARTBEAT, half-born channels) go here.
NO_IP_SHARD = 0
# Repeat sources skip the (~1 us) shard computation; a spoofed flood never repeats, so
# the cache is kept small (65,536 entries were ~6 MB of supervisor memory in a flood).
_SHARD_CACHE_MAX = 16_384


class EventDispatcher:
    """Owns one bound PUSH socket per worker and the dispatch counters."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        runtime_dir: str,
        workers: int,
        queue_size: int,
        queue_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.workers = workers
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self._sockets: list[zmq.Socket[Any]] = []
        for index in range(workers):
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, queue_size)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(addresses.worker_events(runtime_dir, index))
            self._sockets.append(sock)
        self._shard_cache: dict[bytes, int] = {}
        self.events_queued = 0
        self.events_without_ip = 0
        self.dropped = [0] * workers
        self.dropped_over_bytes = [0] * workers  # part of `dropped`: the byte bound
        self.sent = [0] * workers
        self.in_flight_bytes = [0] * workers
        # per worker: (value of sent[i] after the batch, its size), oldest first
        self._unacked: list[deque[tuple[int, int]]] = [deque() for _ in range(workers)]

    def shard_for(self, ip: bytes | None) -> int:
        if ip is None:
            return NO_IP_SHARD
        shard = self._shard_cache.get(ip)
        if shard is None:
            computed = shard_of(ip.decode("ascii", "replace"), self.workers)
            shard = NO_IP_SHARD if computed is None else computed
            if len(self._shard_cache) >= _SHARD_CACHE_MAX:
                self._shard_cache.clear()
            self._shard_cache[ip] = shard
        return shard

    def dispatch(self, bodies: list[bytes], read_ts: float) -> None:
        """Route one read's worth of event bodies; called from the ESL read loop."""
        if not bodies:
            return
        n = self.workers
        batches: list[list[bytes]] = [[] for _ in range(n)]
        shard_for = self.shard_for
        without_ip = 0
        for body in bodies:
            ip = find_source_ip(body)
            if ip is None:
                without_ip += 1
            batches[shard_for(ip)].append(body)
        self.events_queued += len(bodies)
        self.events_without_ip += without_ip
        for index in range(n):
            batch = batches[index]
            if not batch:
                continue
            msg = pack_event_batch(read_ts, batch)
            if self.in_flight_bytes[index] + len(msg) > self.queue_bytes:
                self.dropped[index] += len(batch)
                self.dropped_over_bytes[index] += len(batch)
                continue
            try:
                self._sockets[index].send(msg, zmq.NOBLOCK)
            except zmq.Again:
                self.dropped[index] += len(batch)
                continue
            self.sent[index] += len(batch)
            self.in_flight_bytes[index] += len(msg)
            self._unacked[index].append((self.sent[index], len(msg)))

    def acknowledge(self, index: int, processed: int) -> None:
        """The worker has handled `processed` events: release the bytes of those batches."""
        unacked = self._unacked[index]
        while unacked and unacked[0][0] <= processed:
            self.in_flight_bytes[index] -= unacked.popleft()[1]

    def reset_worker(self, index: int) -> None:
        """A restarted worker: what was queued to the dead one is gone."""
        self.sent[index] = 0
        self.in_flight_bytes[index] = 0
        self._unacked[index].clear()

    @property
    def events_dropped(self) -> int:
        return sum(self.dropped)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
