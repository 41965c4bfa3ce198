"""Policy for ESL commands sent through the API.

The Go program accepted `<allowed entry><space|tab><anything>` and wrote it verbatim
followed by a blank line, so `"status \\n\\napi system id"` smuggled a second ESL command
past the allow-list (FreeSWITCH splits commands on blank lines). Here the arguments
may hold no control character at all, so no byte of the command can end an ESL frame.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

MAX_COMMAND_BYTES = 1024
_SEPARATORS = (" ", "\t")
# Cc: C0 controls (CR, LF, NUL, TAB ...), DEL and C1; Zl/Zp: Unicode line/paragraph breaks.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


class CommandRefused(ValueError):
    """The command is not allowed; str(exc) says why (safe to log, never echoes raw bytes)."""


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in text)


def _byte_length(command: str) -> int:
    try:
        return len(command.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates from JSON "\ud800"
        raise CommandRefused("command is not valid UTF-8") from exc


def check_command(command: str, allowed: Sequence[str]) -> str:
    """Return the normalized command, or raise CommandRefused.

    Allowed iff the command equals an entry exactly, or is `<entry><space|tab><args>`
    (case-sensitive, no trimming, like Go) where args hold no control characters,
    and the whole command is at most MAX_COMMAND_BYTES of UTF-8. Normalization turns
    a tab separator into a space, because FreeSWITCH splits `api` commands on a space.
    """
    if not command:
        raise CommandRefused("empty command")
    if _byte_length(command) > MAX_COMMAND_BYTES:
        raise CommandRefused(f"command longer than {MAX_COMMAND_BYTES} bytes")
    for entry in allowed:
        if not entry or _has_control(entry):
            continue
        if command == entry:
            return entry
        if len(command) > len(entry) and command.startswith(entry):
            if command[len(entry)] not in _SEPARATORS:
                continue
            args = command[len(entry) + 1 :]
            if _has_control(args):
                raise CommandRefused("control characters in command arguments")
            return f"{entry} {args}" if args else entry
    raise CommandRefused("command not in esl_allowed_commands")
