"""Silences: Alertmanager-style matchers that keep matching alerts from notifying.

A silence has matchers on ``rule``, ``stream``, ``severity`` and any label
name, a start and an end time, a comment and who made it. While one matches,
an alert's events are still recorded (with the silence's id) but go to no
action. Matchers follow Alertmanager's API shape::

    {"name": "rule", "value": "lobby-motion", "isRegex": false, "isEqual": true}

``isRegex`` values are anchored (``^(?:value)$``) as in Alertmanager. The
``stream`` of a cross-camera alert (``a+b``) matches its key or any of its
streams. A name that is not ``rule``, ``stream`` or ``severity`` is a label.

:class:`SilenceBook` is the running daemon's view: it re-reads the store every
few seconds (so a silence added by ``watcher silence add`` in another process
takes effect within :data:`REFRESH_S`), and the console updates it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

REFRESH_S = 2.0
FIELDS = ("rule", "stream", "severity")
"""Matcher names that are not labels."""
MAX_COMMENT = 1000
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


class SilenceError(ValueError):
    """A silence or matcher is malformed (the message says which part)."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def __post_init__(self) -> None:
        if not _LABEL_NAME.match(self.name):
            raise SilenceError(f"matcher name {self.name!r} is not a label name")
        if self.is_regex:
            try:
                re.compile(self.value)
            except re.error as exc:
                raise SilenceError(f"matcher {self.name}: bad regular expression: {exc}"
                                   ) from None

    def matches(self, values: Sequence[str]) -> bool:
        """Whether one of ``values`` (a missing label: ``[""]``) satisfies the matcher."""
        if self.is_regex:
            hit = any(re.fullmatch(self.value, v) is not None for v in values)
        else:
            hit = self.value in values
        return hit if self.is_equal else not hit

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex,
                "isEqual": self.is_equal}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Matcher:
        if not isinstance(data, Mapping):
            raise SilenceError("a matcher is an object {name, value, isRegex, isEqual}")
        name, value = data.get("name"), data.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise SilenceError("a matcher needs a string name and value")
        is_regex, is_equal = data.get("isRegex", False), data.get("isEqual", True)
        if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
            raise SilenceError("a matcher's isRegex and isEqual are true or false")
        return cls(name, value, is_regex, is_equal)

    def __str__(self) -> str:
        op = ("=~" if self.is_regex else "=") if self.is_equal else (
            "!~" if self.is_regex else "!=")
        return f"{self.name}{op}{self.value!r}"


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence; ``id`` is a short random hex string."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_ms: int
    ends_ms: int
    created_by: str
    comment: str = ""
    created_ms: int = 0
    expired_ms: int | None = None
    """Set when expired early (``ends_ms`` then equals it)."""

    def active(self, at_ms: int) -> bool:
        return self.starts_ms <= at_ms < self.ends_ms

    def state(self, at_ms: int) -> str:
        """``pending`` (not started), ``active`` or ``expired`` (Alertmanager's words)."""
        if at_ms < self.starts_ms:
            return "pending"
        return "active" if at_ms < self.ends_ms else "expired"

    def matches(self, alert: AlertLabels) -> bool:
        return all(m.matches(alert.values(m.name)) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class AlertLabels:
    """What silences match against: an alert's rule, streams, severity and labels."""

    rule: str
    stream_key: str
    severity: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def values(self, name: str) -> list[str]:
        if name == "rule":
            return [self.rule]
        if name == "stream":
            parts = self.stream_key.split("+")
            return [self.stream_key, *parts] if len(parts) > 1 else [self.stream_key]
        if name == "severity":
            return [self.severity or ""]
        return [str(self.labels.get(name, ""))]


def matchers_from_options(*, rule: str | None = None, stream: str | None = None,
                          severity: str | None = None,
                          labels: Iterable[str] = ()) -> tuple[Matcher, ...]:
    """Equality matchers from ``watcher silence add`` options (``--label K=V``)."""
    out = [Matcher(name, value) for name, value in
           (("rule", rule), ("stream", stream), ("severity", severity)) if value]
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SilenceError(f"--label {item!r}: write it as KEY=VALUE")
        out.append(Matcher(key.strip(), value))
    if not out:
        raise SilenceError("a silence needs at least one matcher "
                           "(--rule, --stream, --label or --severity)")
    return tuple(out)


def validate(matchers: Sequence[Matcher], starts_ms: int, ends_ms: int, comment: str,
             created_by: str) -> None:
    if not matchers:
        raise SilenceError("a silence needs at least one matcher")
    if all(m.matches([""]) for m in matchers):
        raise SilenceError("these matchers match every alert; name a rule, stream, "
                           "severity or label")
    if ends_ms <= starts_ms:
        raise SilenceError("the end time must be after the start time")
    if len(comment) > MAX_COMMENT:
        raise SilenceError(f"the comment is longer than {MAX_COMMENT} characters")
    if not created_by.strip():
        raise SilenceError("say who made the silence (created_by)")


class SilenceBook:
    """The running daemon's silences, re-read from the store every :data:`REFRESH_S`."""

    def __init__(self, load: Callable[[], Awaitable[list[Silence]]], now_ms: Callable[[], int],
                 ) -> None:
        self._load = load
        self._now_ms = now_ms
        self._silences: list[Silence] = []
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    def match(self, alert: AlertLabels, at_ms: int | None = None) -> Silence | None:
        """The first active silence matching ``alert`` (None: notify as usual)."""
        at = self._now_ms() if at_ms is None else at_ms
        for silence in self._silences:
            if silence.active(at) and silence.matches(alert):
                return silence
        return None

    def all(self) -> list[Silence]:
        return list(self._silences)

    async def refresh(self) -> None:
        try:
            self._silences = await self._load()
        except Exception as exc:  # keep the last known silences
            log.warning("silences: cannot read them from the store: %s", exc)
        self.loaded.set()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._forever(), name="silences")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            await self.refresh()
