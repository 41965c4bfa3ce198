"""`fsguard top`: a live terminal view of a running fsguard, through its REST API.

Plain ANSI, no curses: each refresh moves home, clears and redraws, so it works in any
terminal over SSH. On a terminal it switches to the alternate screen, hides the cursor and
puts stdin in cbreak mode (q quits; Ctrl-C still interrupts); everything is restored on
exit, whatever the exit path. Not on a terminal, it prints one frame per refresh.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import termios
import time
import tty
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from .ops_client import ApiError, ApiUnreachable, OpsClient, rule_of, user_agent_of
from .output import Style, table

ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, hide cursor
LEAVE = "\x1b[?25h\x1b[?1049l"  # show cursor, main screen
HOME_CLEAR = "\x1b[H\x1b[2J"


@dataclass
class Sample:
    at: float
    esl: dict[str, Any]
    blacklist: dict[str, dict[str, Any]]
    failed: dict[str, dict[str, Any]] | None  # None: endpoint unavailable
    error: str = ""


@dataclass
class TopState:
    client: OpsClient
    previous: Sample | None = None
    ban_times: dict[str, float] = field(default_factory=dict)  # ip -> when first seen banned

    def sample(self) -> Sample:
        now = time.monotonic()
        esl = self.client.esl()
        blacklist = self.client.blacklist()
        try:
            failed: dict[str, dict[str, Any]] | None = self.client.failed()
        except ApiError:
            failed = None
        return Sample(now, esl, blacklist, failed)


def _added_ago(entry: dict[str, Any], wall: float) -> float | None:
    text = entry.get("addedAt")
    if not isinstance(text, str) or not text:
        return None
    try:
        return wall - datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def render(state: TopState, sample: Sample, *, width: int, height: int, style: Style) -> str:
    """One screen as text (lines joined by LF)."""
    st = style
    prev = state.previous
    esl = sample.esl
    rate_text = "-"
    if prev is not None and not prev.error and sample.at > prev.at:
        delta = int(esl.get("eventsQueued", 0)) - int(prev.esl.get("eventsQueued", 0))
        rate_text = f"{max(0, delta) / (sample.at - prev.at):,.1f}"
    wall = time.time()
    for ip, entry in sample.blacklist.items():
        if ip not in state.ban_times:
            ago = _added_ago(entry, wall)
            state.ban_times[ip] = sample.at - (ago if ago is not None and ago >= 0 else 0.0)
    for ip in list(state.ban_times):
        if ip not in sample.blacklist and sample.at - state.ban_times[ip] > 60:
            del state.ban_times[ip]
    bans_min = sum(1 for t in state.ban_times.values() if sample.at - t <= 60)
    conn = st("connected", "green") if esl.get("connected") else st("DISCONNECTED", "red", "bold")
    lines = [
        st("fsguard top", "bold") + f"  {state.client.url}  "
        + time.strftime("%H:%M:%S") + "   (q quits)",
        f"ESL {conn} {esl.get('host', '?')}:{esl.get('port', '?')}   "
        f"events/s {st(rate_text, 'bold')}   processed {esl.get('eventsProcessed', 0)}   "
        f"dropped {esl.get('eventsDropped', 0)}   workers {esl.get('workerCount', '?')} "
        f"(queue {esl.get('queueLength', 0)}/{esl.get('queueCapacity', 0)})",
        f"bans/min {st(str(bans_min), 'bold')}   active bans {len(sample.blacklist)}",
    ]
    if sample.error:
        lines.append(st(f"API error: {sample.error}", "red"))
    # top offending addresses: failed-auth counters and bans
    rows: dict[str, list[Any]] = {}
    for ip, entry in (sample.failed or {}).items():
        users = ",".join(entry.get("userIds") or [])
        rows[ip] = [ip, "failing", int(entry.get("count", 0) or 0), "-", users]
    for ip, entry in sample.blacklist.items():
        fails = int(entry.get("failCount", 0) or 0)
        old = rows.get(ip)
        count = max(fails, old[2] if old else 0)
        rows[ip] = [ip, st("BANNED", "red"), count, rule_of(entry), str(entry.get("reason", ""))]
    ranked = sorted(rows.values(), key=lambda r: (-r[2], r[0]))
    room = max(3, (height - len(lines) - 12) // 2)
    lines.append("")
    lines.append(st("TOP OFFENDING ADDRESSES", "bold")
                 + ("" if sample.failed is not None else "  (/security/failed unavailable)"))
    if ranked:
        cut = [[*r[:4], r[4][: max(10, width - 70)]] for r in ranked[:room]]
        lines.append(table(("ADDRESS", "STATE", "COUNT", "RULE", "USERS / REASON"), cut,
                           right=(2,), style=st))
    else:
        lines.append("  none")
    agents = Counter(ua for ua in (user_agent_of(e) for e in sample.blacklist.values()) if ua)
    lines.append("")
    lines.append(st("TOP USER AGENTS (banned addresses)", "bold"))
    if agents:
        lines.append(table(("USER AGENT", "BANS"), agents.most_common(room), right=(1,),
                           style=st))
    else:
        lines.append("  none known")
    return "\n".join(line[: width + 40] for line in "\n".join(lines).split("\n"))


@contextlib.contextmanager
def _terminal(out: TextIO, inp: TextIO) -> Iterator[int | None]:
    """Alternate screen + cbreak stdin; yields stdin's fd when keys can be read."""
    out_tty = out.isatty()
    fd: int | None = None
    saved: list[Any] | None = None
    try:
        if inp.isatty():
            fd = inp.fileno()
            saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        if out_tty:
            out.write(ENTER)
            out.flush()
        yield fd
    finally:
        if out_tty:
            out.write(LEAVE)
            out.flush()
        if fd is not None and saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_key(fd: int | None, timeout: float) -> bool:
    """Sleep up to `timeout`; True when q was pressed."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if fd is None:
            time.sleep(remaining)
            return False
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            data = os.read(fd, 64)
            if not data or b"q" in data.lower():
                return True


def main(
    client: OpsClient,
    *,
    interval: float = 1.0,
    iterations: int = 0,
    out: TextIO | None = None,
    inp: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    inp = inp or sys.stdin
    state = TopState(client)
    first = state.sample()  # ApiUnreachable here -> exit 3 before touching the terminal
    style = Style.for_stream(out)
    tty_out = out.isatty()
    count = 0
    try:
        with _terminal(out, inp) as fd:
            sample = first
            while True:
                size = shutil.get_terminal_size((100, 40))
                screen = render(state, sample, width=size.columns, height=size.lines,
                                style=style)
                if tty_out:
                    out.write(HOME_CLEAR + screen + "\n")
                else:
                    out.write(screen + "\n\n")
                out.flush()
                if not sample.error:
                    state.previous = sample
                count += 1
                if iterations and count >= iterations:
                    break
                if _wait_key(fd, interval):
                    break
                try:
                    sample = state.sample()
                except (ApiUnreachable, ApiError) as exc:
                    prev = state.previous or first
                    sample = Sample(time.monotonic(), prev.esl, prev.blacklist, prev.failed,
                                    error=str(exc))
    except KeyboardInterrupt:
        pass
    return 0
