"""Logging setup, escaping of attacker text, rate limiting of repetitive lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.logs import TRACE, LogRateLimiter, escape, get_level, set_level, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines_with_role_pid_and_extra() -> None:
    out = io.StringIO()
    setup_logging("firewall", "json", "info", stream=out)
    logging.getLogger("fsguard.test").warning(
        "banned %s", "192.0.2.1", extra={"ip": "192.0.2.1", "ttl": 3600}
    )
    doc = json.loads(out.getvalue())
    assert doc["level"] == "warning"
    assert doc["role"] == "firewall"
    assert doc["pid"] == os.getpid()
    assert doc["logger"] == "fsguard.test"
    assert doc["msg"] == "banned 192.0.2.1"
    assert (doc["ip"], doc["ttl"]) == ("192.0.2.1", 3600)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])


def test_json_line_stays_one_line_with_hostile_message_and_exception() -> None:
    out = io.StringIO()
    setup_logging("worker-0", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("user %s", "a\nb\udcff\x85")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["msg"] == "user a\nb\udcff\x85"
    assert "RuntimeError: boom" in doc["exc"]


def test_human_format() -> None:
    out = io.StringIO()
    setup_logging("firewall", "human", "info", stream=out)
    logging.getLogger("fsguard.fw").info("added", extra={"ip": "192.0.2.1", "why": "a b"})
    line = out.getvalue().rstrip("\n")
    pattern = (
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO \[firewall "
        + str(os.getpid())
        + r"\] fsguard\.fw: added ip=192\.0\.2\.1 why=\"a b\""
    )
    assert re.fullmatch(pattern, line), line


def test_setup_is_idempotent() -> None:
    out1, out2 = io.StringIO(), io.StringIO()
    setup_logging("api", stream=out1)
    setup_logging("api", stream=out2)
    logging.getLogger("x").info("once")
    assert out1.getvalue() == ""
    assert len(out2.getvalue().splitlines()) == 1


def test_set_level_at_runtime_and_trace() -> None:
    out = io.StringIO()
    setup_logging("supervisor", "json", "info", stream=out)
    log = logging.getLogger("lvl")
    log.debug("hidden")
    log.log(TRACE, "hidden too")
    set_level("TRACE")
    assert get_level() == "trace"
    log.log(TRACE, "shown")
    set_level("error")
    log.warning("hidden again")
    levels = [json.loads(line)["level"] for line in out.getvalue().splitlines()]
    assert levels == ["trace"]
    with pytest.raises(ValueError, match="verbose"):
        set_level("verbose")
    with pytest.raises(ValueError):
        setup_logging("x", fmt="xml")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain text", "plain text"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("nul\x00", "nul\\x00"),
        ("bell\x07 esc\x1b[31m", "bell\\x07 esc\\x1b[31m"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85\x9b", "c1\\u0085\\u009b"),
        ("back\\slash", "back\\\\slash"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("line\u2028sep", "line\\u2028sep"),
        ("lone\ud800", "lone\\ud800"),
        ("esc\udcff", "esc\\xff"),
        (b"bytes\xff\xfe ok", "bytes\\xff\\xfe ok"),
        ("Müller 日本".encode(), "Müller 日本"),
        (None, ""),
        ("", ""),
    ],
)
def test_escape_table(raw: str | bytes | None, expected: str) -> None:
    assert escape(raw) == expected


def test_escape_truncates_with_ellipsis() -> None:
    assert escape("x" * 10, max_len=10) == "x" * 10
    assert escape("x" * 11, max_len=10) == "x" * 10 + "…"
    # An escape sequence is never cut in half.
    assert escape("abcdefgh\r\n", max_len=9) == "abcdefgh…"
    assert escape(b"\xff" * 10_000, max_len=8) == "\\xff\\xff…"


@given(st.one_of(st.text(), st.binary()), st.integers(min_value=0, max_value=300))
def test_escape_never_emits_control_characters(value: str | bytes, max_len: int) -> None:
    out = escape(value, max_len)
    assert len(out) <= max_len + 1
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in out)
    out.encode("utf-8")  # no lone surrogates survive


def test_rate_limiter_one_line_per_key_per_interval() -> None:
    now = [100.0]
    limiter = LogRateLimiter(10.0, clock=lambda: now[0])
    assert limiter.allow("drop")
    assert limiter.allow("ban")
    assert not limiter.allow("drop")
    assert not limiter.allow("drop")
    now[0] = 109.9
    assert not limiter.allow("drop")
    assert limiter.take_suppressed() == {"drop": 3}
    assert limiter.take_suppressed() == {}
    now[0] = 110.0
    assert limiter.allow("drop")
    assert limiter.allow("ban")  # its window ended too
    assert limiter.take_suppressed() == {}


def test_rate_limiter_caps_tracked_keys() -> None:
    now = [0.0]
    limiter = LogRateLimiter(5.0, clock=lambda: now[0], max_keys=2)
    assert limiter.allow("a") and limiter.allow("b")
    assert not limiter.allow("c")
    assert limiter.take_suppressed() == {LogRateLimiter.OVERFLOW_KEY: 1}
    now[0] = 5.0  # old windows expired: room again
    assert limiter.allow("c")
    with pytest.raises(ValueError):
        LogRateLimiter(0)
