"""Checks that rule fields share (rules, confirm blocks, include entries), and cron."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Literal

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, ValidationInfo

from watcher.duration import Duration, parse_duration
from watcher.engine.condition import Condition, default_condition
from watcher.engine.schema import schema_fields

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_DIGIT = re.compile(r"[0-9]")

Severity = Literal["info", "warning", "critical"]
PositiveDuration = Annotated[Duration, Field(gt=0)]


def slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError("must be a slug of at most 63 lowercase letters, digits, '-' and '_', "
                         "starting with a letter or digit")
    return value


def text(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"is empty: {what}")
    return value


def stream_or_streams(value: list[str] | None, info: ValidationInfo) -> list[str] | None:
    """``streams`` given together with ``stream`` is an error."""
    if value is not None and info.data.get("stream") is not None:
        raise ValueError("give `stream` (one) or `streams` (several), not both")
    return value


def condition_for(value: str | None, info: ValidationInfo) -> str | None:
    """``when`` checked against the (already expanded) ``schema``, or its default."""
    schema = info.data.get("schema_")
    if schema is None:  # the schema itself failed; that error is enough
        return value
    fields = schema_fields(schema)
    if value is None:
        default = default_condition(fields)
        if default is None:
            booleans = [name for name, kind in fields.items() if kind == "boolean"]
            why = (f"it has {len(booleans)}: {', '.join(booleans)}" if booleans
                   else "it has none")
            raise ValueError("required unless the schema has exactly one boolean field "
                             f"({why}); e.g. when: people > 0")
        return default
    Condition(value, fields)
    return value


def max_fps_needs_window(value: float, info: ValidationInfo) -> float:
    if "window" in info.data and info.data["window"] is None:
        raise ValueError("only applies with `window` (without it the model sees the latest "
                         "frame only): add window: 10s, or remove max_fps")
    return value


def scalar_labels(value: object) -> object:
    """Scalar label values (numbers, booleans) as the strings YAML users mean."""
    if not isinstance(value, Mapping):
        return value
    out: dict[object, object] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, int | float):
            item = str(item)
        out[key] = item
    return out


def for_value(value: object) -> object:
    """``for``: a count of answers (``3``) or a duration with a unit (``30s``)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("should be a count of answers in a row (3) or a duration with a "
                         "unit (30s)")
    if isinstance(value, int):
        count = value
    elif isinstance(value, str) and value.strip().isdigit():
        count = int(value.strip())
    elif isinstance(value, str):
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("should be longer than 0s")
        return timedelta(seconds=seconds)
    else:
        raise ValueError("should be a count of answers in a row (3) or a duration (30s)")
    if not 1 <= count <= 10_000:
        raise ValueError("should be a count from 1 to 10000 (or a duration such as 30s)")
    return count


def cron_trigger(expr: str, timezone: object = None) -> CronTrigger:
    """The APScheduler trigger of a 5-field crontab (weekdays given by name)."""
    fields = expr.split()
    if len(fields) == 5 and _DIGIT.search(fields[4]):
        raise ValueError(
            "name the weekdays in the day-of-week field (mon-fri, sat,sun): numbers mean "
            "different days to cron (0 = Sunday) and to APScheduler 3 (0 = Monday)")
    try:
        return CronTrigger.from_crontab(expr, timezone=timezone)
    except ValueError as exc:
        raise ValueError(f"bad cron expression: {exc} (5 fields: minute hour "
                         "day-of-month month day-of-week, e.g. '*/5 * * * *')") from None
