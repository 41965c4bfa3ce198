"""Real-sized ESL frames for the benchmarks, cut from the real FreeSWITCH 1.10.12 capture.

Every event body is a verbatim body of tests/fixtures/capture_json.bin (the same bytes as
/work/shared/esl-captures/real/capture_json.bin) with its source address (127.0.0.1 in
the lab) rewritten, so sizes, key order and the headers fsguard never reads are real:
sofia::register ~1.4 KB, CHANNEL_CREATE ~4.3 KB, register_failure ~0.7 KB.
"""

from __future__ import annotations

import ipaddress
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "tests" / "fixtures" / "capture_json.bin"
LAB_IP = b"127.0.0.1"
_FRAME_RE = re.compile(rb"Content-Length: (\d+)\nContent-Type: text/event-json\n\n")
_TS_RE = re.compile(rb'"Event-Date-Timestamp":"\d+"')


def _kind(body: bytes) -> str:
    name = re.search(rb'"Event-Name":"([^"]*)"', body)
    sub = re.search(rb'"Event-Subclass":"([^"]*)"', body)
    if sub is not None:
        return sub.group(1).decode()
    return name.group(1).decode() if name else "?"


def capture_bodies(path: Path = CAPTURE) -> dict[str, list[bytes]]:
    """Every event body of the capture, by Event-Subclass (or Event-Name)."""
    data = path.read_bytes()
    out: dict[str, list[bytes]] = {}
    for m in _FRAME_RE.finditer(data):
        body = data[m.end() : m.end() + int(m.group(1))]
        out.setdefault(_kind(body), []).append(body)
    return out


class Template:
    """One captured body, split at its source address: `render(ip)` is a whole ESL frame."""

    def __init__(self, body: bytes) -> None:
        if LAB_IP not in body:
            raise ValueError("template body has no lab address to rewrite")
        self.parts = body.split(LAB_IP)
        self.size = len(body)

    def body(self, ip: bytes, ts_us: int | None = None) -> bytes:
        body = ip.join(self.parts)
        if ts_us is not None:
            body = _TS_RE.sub(b'"Event-Date-Timestamp":"%d"' % ts_us, body, count=1)
        return body

    def render(self, ip: bytes, ts_us: int | None = None) -> bytes:
        body = self.body(ip, ts_us)
        return b"Content-Length: %d\nContent-Type: text/event-json\n\n%s" % (len(body), body)


class Templates:
    """The captured bodies the workloads are made of."""

    def __init__(self, path: Path = CAPTURE) -> None:
        bodies = capture_bodies(path)
        self.register = Template(bodies["sofia::register"][0])
        self.failure = Template(bodies["sofia::register_failure"][0])
        self.wrong_call_state = Template(bodies["sofia::wrong_call_state"][0])
        self.pre_register = Template(bodies["sofia::pre_register"][0])
        # The lab's internal calls (9999, 1000, voicemail x2): the international one would
        # make every legitimate caller a toll-fraud suspect. Two were placed with the
        # sipcli scanner; as legitimate calls they carry a desk phone's User-Agent instead.
        self.channel_create = [
            Template(b.replace(b"sipcli/v1.8", b"Yealink SIP-T46S"))
            for b in bodies["CHANNEL_CREATE"] if b'"011' not in b
        ]

    def failure_frame(self, ip: bytes) -> bytes:
        """A register_failure stamped now (Event-Date-Timestamp), for time-to-ban runs."""
        return self.failure.render(ip, int(time.time() * 1_000_000))


def ip_bytes(base: str, index: int) -> bytes:
    return str(ipaddress.ip_address(base) + index).encode()


def mix_frames(
    t: Templates, count: int, *, sources: int = 10_000, attackers: int = 32, seed: int = 1
) -> Iterator[bytes]:
    """The realistic mix: 70% register and 15% CHANNEL_CREATE from `sources` addresses,
    10% register_failure from `attackers` addresses, 5% wrong_call_state (attackers).
    With attackers=0 their share is registrations (a background without bans)."""
    rng = random.Random(seed)
    legit = [ip_bytes("45.60.0.1", i) for i in range(sources)]
    bad = [ip_bytes("203.0.113.1", i) for i in range(attackers)]
    cc = t.channel_create
    for _ in range(count):
        roll = rng.random()
        if roll < 0.70 or (roll >= 0.85 and not attackers):
            yield t.register.render(legit[rng.randrange(sources)])
        elif roll < 0.85:
            yield cc[rng.randrange(len(cc))].render(legit[rng.randrange(sources)])
        elif roll < 0.95:
            yield t.failure.render(bad[rng.randrange(attackers)])
        else:
            yield t.wrong_call_state.render(bad[rng.randrange(attackers)])


def flood_frames(t: Templates, start: int, count: int, base: str = "100.64.0.0") -> Iterator[bytes]:
    """Spoofed-source flood: one sofia::pre_register per new address."""
    first = int(ipaddress.IPv4Address(base)) + start
    for i in range(count):
        yield t.pre_register.render(str(ipaddress.IPv4Address(first + i)).encode())


def mix_mean_size(t: Templates) -> float:
    cc = sum(c.size for c in t.channel_create) / len(t.channel_create)
    return (0.70 * t.register.size + 0.15 * cc + 0.10 * t.failure.size
            + 0.05 * t.wrong_call_state.size)
