"""Durations as users write them: seconds, ``timedelta`` or ``"30s"``.

Accepted everywhere a TTL, timeout or margin is taken:

* ``int`` or ``float``: seconds (``30``, ``0.5``);
* :class:`datetime.timedelta`;
* a string of one or more ``<number><unit>`` parts, units ``ms``, ``s``,
  ``m``, ``h`` and ``d``: ``"500ms"``, ``"30s"``, ``"5m"``, ``"1m30s"``,
  ``"1.5s"``. A bare number is refused: seconds or milliseconds?
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Union

from .errors import InvalidArgument

#: What a duration parameter accepts.
Duration = Union[int, float, timedelta, str]

_UNIT_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def to_seconds(value: Duration, what: str = "duration") -> float:
    """``value`` in seconds (a non-negative, finite float).

    Raises :class:`~bextlock.InvalidArgument` naming ``what`` for anything
    else: a negative or non-finite number, a bool, an unknown unit.
    """
    if isinstance(value, bool):
        raise InvalidArgument(f"{what} must be a duration, not a bool ({value!r})")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse(value, what)
    else:
        raise InvalidArgument(
            f"{what} must be seconds (int or float), a timedelta or a string like '30s', "
            f"not {type(value).__name__}"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidArgument(f"{what} {value!r} is not a finite duration")
    if seconds < 0:
        raise InvalidArgument(f"{what} {value!r} is negative")
    return seconds


def to_ms(value: Duration, what: str = "duration") -> int:
    """``value`` in whole milliseconds (rounded down, so a lease is never
    believed longer than asked)."""
    return int(to_seconds(value, what) * 1000.0 + 1e-6)


def _parse(text: str, what: str) -> float:
    s = text.strip()
    if not s:
        raise InvalidArgument(f"{what} is an empty string")
    total_ms = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            hint = " (add a unit: ms, s, m, h or d)" if _is_number(s) else ""
            raise InvalidArgument(
                f"{what} {text!r} is not a duration like '500ms', '30s', '5m' or '1m30s'{hint}"
            )
        total_ms += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    return total_ms / 1000.0


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
