"""Command-line plumbing shared by the `fsguard` verbs: help formatting, flag values,
and a quiet end when stdout is a closed pipe (`fsguard bans | head`)."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from shared.config import ConfigError, parse_duration

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as any Unix tool whose reader went away


class UsageError(Exception):
    """A bad argument value (exit 2)."""


def version() -> str:
    try:
        return metadata.version("fsguard")
    except metadata.PackageNotFoundError:
        return "dev"


def flag_duration(text: str, flag: str) -> float:
    """A duration given on the command line; errors name the flag, not a config key."""
    try:
        return parse_duration(text, flag)
    except ConfigError as exc:
        raise UsageError(
            f"{flag}: invalid value {text!r}: expected {exc.expected or 'a duration'}"
        ) from None


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already gives one, or
    the default is empty (None, False, "")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, "", argparse.SUPPRESS)
            or not action.option_strings
            or isinstance(default, list)
        ):
            return action.help
        return f"{text} (default: {default})" if text else f"(default: {default})"


def finish_parsers(parser: argparse.ArgumentParser, epilog: str) -> None:
    """Every parser in the tree gets the defaults formatter and, if it has none, `epilog`."""
    parser.formatter_class = DefaultsFormatter
    if not parser.epilog:
        parser.epilog = epilog
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                finish_parsers(child, epilog)


def quiet_broken_pipe() -> int:
    """stdout's reader is gone: point stdout at /dev/null so the interpreter's final
    flush cannot raise again, and exit as a Unix tool killed by SIGPIPE would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
    return EXIT_BROKEN_PIPE
