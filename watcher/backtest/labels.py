"""Ground-truth labels: JSON lines, one interval per line.

::

    {"stream": "lobby", "start": 12.0, "end": 20.0, "label": "event",
     "rule": "lobby-motion", "note": "a man with a ladder"}

``start`` and ``end`` are seconds from the recording's start (for a live
stream, seconds on its own clock). ``label`` is ``event`` (something a rule
should fire on) or ``false_alarm`` (a firing there is wrong); anything outside
an ``event`` interval counts as quiet. ``rule`` (optional) limits the label to
one rule; ``note`` is free text. Other keys are kept but not read, so the
console's feedback export (``watcher alerts --feedback --json``, which adds
``start_at``, ``end_at``, ``event_id``, ...) is a valid labels file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher.errors import WatcherError

LABELS = ("event", "false_alarm")


class LabelsError(WatcherError):
    """A labels file that cannot be read; the message names file:line and the field."""


@dataclass(frozen=True, slots=True)
class Label:
    stream: str
    start: float
    end: float
    label: str = "event"
    rule: str | None = None
    note: str | None = None

    @property
    def is_event(self) -> bool:
        return self.label == "event"

    def applies_to(self, rule: str, stream: str) -> bool:
        return (self.rule is None or self.rule == rule) and stream in self.stream.split("+")

    def overlaps(self, start: float, end: float) -> bool:
        return start < self.end and self.start < end

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"stream": self.stream, "start": self.start, "end": self.end,
                                "label": self.label}
        if self.rule is not None:
            data["rule"] = self.rule
        if self.note is not None:
            data["note"] = self.note
        return data


def parse_label(data: object, where: str) -> Label:
    if not isinstance(data, dict):
        raise LabelsError(f"{where}: expected a JSON object")
    problems = []
    stream = data.get("stream")
    if not isinstance(stream, str) or not stream:
        problems.append("stream: required, a stream name")
    times = {}
    for key in ("start", "end"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{key}: required, seconds from the recording's start (>= 0)")
        times[key] = value
    label = data.get("label", "event")
    if label not in LABELS:
        problems.append(f"label: {label!r} is not one of {', '.join(LABELS)}")
    for key in ("rule", "note"):
        if data.get(key) is not None and not isinstance(data.get(key), str):
            problems.append(f"{key}: must be a string")
    if not problems and times["end"] < times["start"]:
        problems.append("end: before start")
    if problems:
        raise LabelsError("\n".join(f"{where}: {p}" for p in problems))
    return Label(str(stream), float(times["start"]), float(times["end"]), str(label),
                 data.get("rule"), data.get("note"))


def load_labels(path: str | Path) -> list[Label]:
    """Every label of a JSON-lines file (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise LabelsError(f"{where}: not JSON ({exc})") from None
        labels.append(parse_label(data, where))
    return labels


def dump_labels(labels: Iterable[Label]) -> str:
    return "".join(json.dumps(label.to_json()) + "\n" for label in labels)
