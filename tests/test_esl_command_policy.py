"""check_command: the Go allow-list semantics minus the CR/LF injection (facts §1.8, §9.1)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsguard_api.esl_commands import MAX_COMMAND_BYTES, CommandRefused, check_command

DEFAULT = ["status", "uptime", "version"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("status", "status"),
        ("status all", "status all"),
        ("status\targ", "status arg"),  # Go accepted a tab; FreeSWITCH splits on a space
        ("uptime", "uptime"),
        ("version short", "version short"),
        ("status  two spaces", "status  two spaces"),
        ("status ", "status"),
    ],
)
def test_allowed(command: str, expected: str) -> None:
    assert check_command(command, DEFAULT) == expected


@pytest.mark.parametrize(
    "command",
    [
        "status \n\napi system id",  # the Go injection regression
        "status\n\napi system id",
        "status \r\n\r\napi system id",
        "status all\r",
        "status a\x00b",
        "status a\tb",  # a control character inside the arguments
        "status a\x1bb",
        "status a\x7fb",
        "status a\x85b",  # C1 NEL
        "status a\u2028b",
        "statusand_evil",
        "status_evil",
        "versions",
        "Status",
        " status",
        "",
        "\n",
        "reloadxml",
        "status a\ud800",  # lone surrogate: not UTF-8
    ],
)
def test_refused(command: str) -> None:
    with pytest.raises(CommandRefused):
        check_command(command, DEFAULT)


def test_length_limit_counts_utf8_bytes() -> None:
    prefix = "status "
    fits = prefix + "a" * (MAX_COMMAND_BYTES - len(prefix))
    assert check_command(fits, DEFAULT) == fits
    with pytest.raises(CommandRefused):
        check_command(fits + "a", DEFAULT)
    two_byte = prefix + "é" * ((MAX_COMMAND_BYTES - len(prefix)) // 2 + 1)
    assert len(two_byte) <= MAX_COMMAND_BYTES < len(two_byte.encode())
    with pytest.raises(CommandRefused):
        check_command(two_byte, DEFAULT)


def test_empty_and_bad_entries_never_match() -> None:
    with pytest.raises(CommandRefused):
        check_command("anything", ["", "  "])
    with pytest.raises(CommandRefused):
        check_command("status\n", ["status\n"])
    with pytest.raises(CommandRefused):
        check_command("status", [])


def test_entry_with_spaces() -> None:
    allowed = ["show channels"]
    assert check_command("show channels", allowed) == "show channels"
    assert check_command("show channels as json", allowed) == "show channels as json"
    with pytest.raises(CommandRefused):
        check_command("show calls", allowed)


@given(st.text(max_size=80))
def test_property_accepted_commands_are_one_clean_line(suffix: str) -> None:
    """Whatever follows an allowed entry, an accepted command holds no control character."""
    for command in ("status" + suffix, "status " + suffix):
        try:
            result = check_command(command, DEFAULT)
        except CommandRefused:
            continue
        assert result == "status" or result.startswith("status ")
        assert not any(unicodedata.category(ch) == "Cc" for ch in result)
        assert "\n" not in result and "\r" not in result
        assert len(result.encode()) <= MAX_COMMAND_BYTES
