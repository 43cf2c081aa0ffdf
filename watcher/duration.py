"""Durations as config files write them: ``500ms``, ``5s``, ``2m``, ``1h30m``, ``1d``.

A plain number (``30``, ``2.5``, or the same as text) is seconds. Units, from
largest to smallest, are ``w d h m s ms``; a duration may chain several, each
at most once and largest first (``1h30m``, ``2m30s``, ``1s500ms``). No spaces,
no signs: a negative duration is an error.

:data:`Duration` is the pydantic type: the value is a ``float`` of seconds, so
bounds read as seconds (``Annotated[Duration, Field(gt=0)]`` or
``x: Duration = Field(30, gt=0)``)::

    timeout_seconds: Duration = Field(30, gt=0, description="...")
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

UNITS: dict[str, float] = {
    "w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001,
}
"""Seconds per unit, largest first (the order a chained duration must follow)."""

HINT = "use e.g. 500ms, 5s, 2m, 1h"
_RANK = {unit: rank for rank, unit in enumerate(UNITS)}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class DurationError(ValueError):
    """A value that is not a duration; the message says what would be."""


def parse_duration(value: object) -> float:
    """Seconds in ``value`` (a duration string, a number of seconds or a timedelta)."""
    if isinstance(value, bool):
        raise DurationError(f"bad duration {_show(value)}: {HINT}")
    try:
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = _parse_text(value)
        else:
            raise DurationError(f"bad duration {_show(value)}: {HINT}")
    except OverflowError:
        raise DurationError(f"bad duration {_show(value)}: too large") from None
    if not math.isfinite(seconds):
        raise DurationError(f"bad duration {_show(value)}: must be finite")
    if seconds < 0:
        raise DurationError(f"bad duration {_show(value)}: must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest spelling :func:`parse_duration` reads back: ``90`` -> ``1m30s``."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms" if millis < 1000 else f"{millis / 1000:g}s"
    whole, parts = millis // 1000, []
    for unit in ("d", "h", "m", "s"):
        count, whole = divmod(whole, int(UNITS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _parse_text(value: str) -> float:
    text = value.strip()
    if value.lstrip().startswith("-"):
        raise DurationError(f"bad duration {_show(value)}: must not be negative")
    if _NUMBER.fullmatch(text):
        return float(text)
    total, pos, last_rank = 0.0, 0, -1
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        number, unit = match.groups()
        if _RANK[unit] <= last_rank:
            raise DurationError(
                f"bad duration {_show(value)}: give each unit once, largest first (e.g. 1h30m)")
        last_rank = _RANK[unit]
        total += float(number) * UNITS[unit]
        pos = match.end()
    if pos == 0 or pos != len(text):
        raise DurationError(f"bad duration {_show(value)}: {HINT}")
    return total


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _validate(value: object) -> float:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise PydanticCustomError("duration", "{reason}", {"reason": str(exc)}) from None


Duration = Annotated[
    float,
    BeforeValidator(_validate),
    WithJsonSchema({
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(w|d|h|m|s|ms))+$"},
        ],
        "description": "A duration such as 500ms, 5s, 2m, 1h30m or 1d, or a number of seconds.",
    }),
]
"""Seconds as a ``float``, written in config files as ``5s``, ``500ms``, ``1h30m``, ``30``..."""
