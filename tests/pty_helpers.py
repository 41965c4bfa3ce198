"""A command in a pseudo-terminal of its own (its controlling terminal, 120x40), for the
tests of what fsguard does on a terminal (test_cli_ops' `top`, test_cli_operator's `run`)."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def in_pty(argv: list[str]) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """Run `argv` in a new session whose controlling terminal is a new pty; yields
    (process, master fd, slave fd). On exit a process still running is killed and both
    fds are closed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

    def controlling_tty() -> None:  # runs after setsid(): the pty becomes our terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=controlling_tty, env=env)
    try:
        yield proc, master, slave
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def read_until(master: int, proc: subprocess.Popen[bytes], timeout: float,
               needle: bytes | None = None) -> bytes:
    """What the terminal shows within `timeout` s: until `needle` appears, the pty
    closes or the process ends with nothing more to read."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if needle is not None and needle in out:
                break
        elif proc.poll() is not None:
            break
    return out
