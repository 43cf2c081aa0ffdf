"""What makes a rule ask besides its clock: a changed picture, or another rule firing.

Every evaluation has a :class:`Trigger`: ``tick`` (the schedule, which stays
as a heartbeat), ``change`` (``on_change``: the picture of one of the rule's
streams changed) or ``alert`` (``on_alert``: a rule it follows fired).

A :class:`TriggerGate` per triggered rule turns bursts into asks:

* at most one ask per ``min_interval``: a trigger inside it waits for the
  interval's end;
* never a queue: triggers that arrive while an ask is in flight or waiting
  coalesce into ONE follow-up ask, which carries the newest change time (so
  its window ends at the newest change) and, for alerts, the newest leader.

:class:`ChangeWatch` connects a rule's :class:`~watcher.media.changes.ChangeDetector`
to each of its streams' thumbnails. Frames arrive on capture threads; a change
hops to the event loop with ``call_soon_threadsafe``, so the detector costs the
capture thread one comparison of two 32x24 thumbnails per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from watcher.media.changes import ChangeDetector

log = logging.getLogger(__name__)

TriggerKind = Literal["tick", "change", "alert"]
TRIGGER_KINDS: tuple[TriggerKind, ...] = ("tick", "change", "alert")
SETTLE_S = 0.15
"""After a change, wait this long before asking: the changed frame must have been
encoded, sent, received, decoded and stored by the API (about 50-100 ms on an idle
machine; receivers complete a frame at its last packet, see
:mod:`watcher.server.jitter`)."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """Why an evaluation runs."""

    kind: TriggerKind = "tick"
    changed_at: float | None = None
    """``change``: ``time.monotonic()`` of the frame that changed."""
    stream: str | None = None
    """``change``: the stream whose picture changed; ``alert``: the leader's stream key."""
    leader: str | None = None
    """``alert``: the rule that fired."""
    answer: Mapping[str, Any] | None = None
    """``alert``: the leader's answer."""
    event_id: int | None = None
    end_at: float | None = None
    """``change``: where the asked window ends (``time.monotonic()``): the change, once
    its frame surely reached the API."""

    def variables(self) -> dict[str, Any]:
        """The ``trigger`` template variable of a prompt."""
        return {"kind": self.kind, "rule": self.leader, "stream": self.stream,
                "answer": dict(self.answer or {}), "event_id": self.event_id}


TICK = Trigger()

Evaluate = Callable[[Trigger], Awaitable[Any]]


@dataclass
class GateStats:
    requested: int = 0
    asked: int = 0
    coalesced: int = 0


@dataclass
class TriggerGate:
    """Runs a rule's triggered asks: at most one per ``min_interval``, bursts coalesced."""

    name: str
    evaluate: Evaluate
    min_interval_s: float
    settle_s: float = 0.0
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    owner: Any = None
    """What the gate asks for (the engine re-arms when a reload replaces it)."""
    stats: GateStats = field(default_factory=GateStats)
    _pending: Trigger | None = None
    _task: asyncio.Task[None] | None = None
    _last_ask: float = -float("inf")

    def request(self, trigger: Trigger) -> None:
        """Ask soon because of ``trigger`` (coalesced with any ask not yet started)."""
        self.stats.requested += 1
        if self._pending is not None:
            self.stats.coalesced += 1
            trigger = _merge(self._pending, trigger)
        self._pending = trigger
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"trigger-{self.name}")

    async def idle(self) -> None:
        """Until no ask is running or waiting."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        while self._pending is not None:
            trigger = self._pending
            wait = max(self._last_ask + self.min_interval_s - self.monotonic(),
                       (trigger.changed_at or -float("inf")) + self.settle_s - self.monotonic(),
                       0.0)
            if wait > 0:
                await self.sleep(wait)
            trigger, self._pending = self._pending, None
            if trigger.changed_at is not None:
                trigger = replace(trigger, end_at=trigger.changed_at + self.settle_s)
            self._last_ask = self.monotonic()
            self.stats.asked += 1
            try:
                await self.evaluate(trigger)
            except Exception:
                log.exception("rule %s: a %s-triggered evaluation failed", self.name,
                              trigger.kind)

    async def aclose(self) -> None:
        self._pending = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _merge(older: Trigger, newer: Trigger) -> Trigger:
    """One trigger standing for both: the newest change, and an alert if either was one."""
    if newer.kind == "alert" or older.kind != "alert":
        merged = newer
    else:
        merged = older
    changed = [t for t in (older.changed_at, newer.changed_at) if t is not None]
    return replace(merged, changed_at=max(changed) if changed else None)


class ChangeWatch:
    """Requests a ``change`` trigger when one of a rule's streams changes."""

    def __init__(self, gate: TriggerGate, threshold: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.gate = gate
        self.threshold = threshold
        self.loop = loop
        self.changes = 0
        self._attached: dict[str, tuple[Any, Callable[[np.ndarray, float], None]]] = {}

    def attach(self, streams: Mapping[str, Any], names: list[str]) -> None:
        """Listen to the current trackers of ``names`` (again after a keeper was replaced)."""
        for name in names:
            tracker = getattr(streams.get(name), "changes", None)
            current = self._attached.get(name)
            if current is not None and current[0] is tracker:
                continue
            if current is not None:
                current[0].unlisten(current[1])
            if tracker is None:
                self._attached.pop(name, None)
                continue
            listener = self._listener(name, ChangeDetector(self.threshold))
            tracker.listen(listener)
            self._attached[name] = (tracker, listener)

    def detach(self) -> None:
        for tracker, listener in self._attached.values():
            tracker.unlisten(listener)
        self._attached.clear()

    def _listener(self, stream: str, detector: ChangeDetector,
                  ) -> Callable[[np.ndarray, float], None]:
        def on_thumbnail(thumb: np.ndarray, at: float) -> None:
            if detector.feed(thumb):
                self.changes += 1
                trigger = Trigger("change", changed_at=at, stream=stream)
                with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                    self.loop.call_soon_threadsafe(self.gate.request, trigger)

        return on_thumbnail
