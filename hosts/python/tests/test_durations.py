"""Durations: seconds, timedelta or strings, and clear errors otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest

import bextlock
from bextlock import to_ms, to_seconds


@pytest.mark.parametrize(
    "value, ms",
    [
        (30, 30_000),
        (0.5, 500),
        (0.29, 290),
        (timedelta(minutes=1, seconds=30), 90_000),
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1m30s", 90_000),
        ("1.5s", 1_500),
        (" 2s ", 2_000),
        (0, 0),
    ],
)
def test_accepted(value: bextlock.Duration, ms: int) -> None:
    assert to_ms(value) == ms
    assert to_seconds(value) == pytest.approx(ms / 1000)


@pytest.mark.parametrize(
    "value, says",
    [
        ("30", "add a unit"),
        ("", "empty"),
        ("3 fortnights", "not a duration"),
        ("5x", "not a duration"),
        ("-5s", "not a duration"),
        (-1, "negative"),
        (timedelta(seconds=-1), "negative"),
        (float("inf"), "finite"),
        (True, "bool"),
        ([1], "not list"),
    ],
)
def test_refused(value: object, says: str) -> None:
    with pytest.raises(bextlock.InvalidArgument, match=says) as info:
        to_ms(value, "ttl")  # type: ignore[arg-type]
    assert "ttl" in str(info.value)
