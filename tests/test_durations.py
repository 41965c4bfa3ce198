"""shared/durations.py: Go's time.Duration.String() and the compact config form."""

from __future__ import annotations

import pytest

from shared.config import parse_duration
from shared.durations import format_duration, go_duration


# Expected texts are Go 1.22's time.Duration(...).String() for the same values.
@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (1, "1s"), (60, "1m0s"), (3600, "1h0m0s"), (5400, "1h30m0s"), (1.5, "1.5s"),
     (0.25, "250ms"), (0.0015, "1.5ms"), (1.5e-6, "1.5µs"), (1e-9, "1ns"), (-1, "-1s"),
     (-0.5, "-500ms"), (90061.25, "25h1m1.25s"), (86400 * 30, "720h0m0s")],
)  # fmt: skip
def test_go_duration_matches_go(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 1, 59.5, 60, 3600.001, 5400, 0.25, 86400 * 7, 1e-6])
def test_both_forms_read_back_as_the_same_duration(seconds: float) -> None:
    for text in (go_duration(seconds).replace("µs", "us"), format_duration(seconds)):
        assert parse_duration(text, "k") == pytest.approx(seconds)
