"""Config scalars: Go-style durations ("1h30m", "250ms", plus "d" and plain seconds) and
TCP ports, parsed with errors naming the key (shared.durations formats them back).
"""

from __future__ import annotations

import math
import re

from shared.config_keys import invalid_value
from shared.durations import parse_go_duration

_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_HELP = 'a duration such as "250ms", "5s", "5m", "1h30m", "7d" or a number of seconds'


# The longest timed ban (100 years): its expiry stays a valid calendar date everywhere it is
# shown or stored. Longer means permanent, which has its own flag.
MAX_BAN_SECONDS = 100 * 365 * 86400


def parse_duration(value: str | int | float, key: str) -> float:
    """Go-style duration ("1h30m", "1m0s", "250ms"), plus "d" and plain seconds."""
    seconds: float
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise invalid_value(key, value, _DURATION_HELP)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().removeprefix("+")
        if text.startswith("-"):  # "-0s" too: a duration here is never signed negative
            raise invalid_value(key, value, "a duration that is not negative")
        if _PLAIN_NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            try:
                if text.startswith("+"):
                    raise ValueError(text)  # one "+" at most
                seconds = parse_go_duration(text, days=True)
            except ValueError:
                raise invalid_value(key, value, _DURATION_HELP) from None
    if not math.isfinite(seconds):
        raise invalid_value(key, value, _DURATION_HELP)
    if seconds < 0:
        raise invalid_value(key, value, "a duration that is not negative")
    return seconds


def parse_port(value: str | int, key: str) -> int:
    """TCP port from "8088" or 8088, 1..65535."""
    expected = 'a TCP port 1..65535 (number or string such as "8088")'
    if isinstance(value, bool):
        raise invalid_value(key, value, expected)
    if isinstance(value, str) and re.fullmatch(r"\d{1,5}", value):
        port = int(value)
    elif isinstance(value, int):
        port = value
    else:
        raise invalid_value(key, value, expected)
    if not 1 <= port <= 65535:
        raise invalid_value(key, value, expected)
    return port
