"""The engine's triggered rules: a gate per ``on_change``/``on_alert`` rule, kept in step
with its runners (:meth:`TriggeredRules.arm` after start and every reload).

* ``on_change``: a :class:`~watcher.engine.triggers.ChangeWatch` on each of the
  rule's streams requests a ``change`` trigger;
* ``on_alert``: :meth:`TriggeredRules.on_step` (an engine observer) requests an
  ``alert`` trigger for each follower when a leader's step records a ``firing``.

:attr:`TriggeredRules.change_observers` see every ``change`` trigger of every
watch, present and future (a benchmark times the detector with it).

Change thumbnails cost a decode per frame on a passthrough stream, so
:meth:`TriggeredRules.arm` also tells each stream whether a rule needs them
(``on_change`` or ``skip_unchanged``): the :data:`THUMBNAILS` holder of its
``frames.demand``, set or cleared on every reload.

A rule switched off at run time (``engine.paused``) ignores its triggers. In
cluster mode the engine only runs the rules of the groups this instance owns,
so triggers fire only there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from watcher.engine.state import AlertState, Kind
from watcher.engine.store import AlertEventRecord
from watcher.engine.triggers import (
    SETTLE_S,
    ChangeObserver,
    ChangeWatch,
    Trigger,
    TriggerGate,
)

THUMBNAILS = "thumbnails"
"""The ``frames.demand`` holder of the rules that need a stream's change thumbnails."""


class Engine(Protocol):
    runners: Mapping[str, Any]
    streams: Mapping[str, Any]
    paused: set[str]


class TriggeredRules:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.gates: dict[str, TriggerGate] = {}
        self.watches: dict[str, ChangeWatch] = {}
        self.followers: dict[str, list[str]] = {}
        """leader rule -> rules with it in ``on_alert``."""
        self.change_observers: list[ChangeObserver] = []
        """Shared by every :class:`ChangeWatch` this makes."""

    def arm(self) -> None:
        """Gates and watches for the current runners (new runner: new gate)."""
        loop = asyncio.get_running_loop()
        runners = self.engine.runners
        wanted = {name: r for name, r in runners.items()
                  if r.rule.on_change or r.rule.on_alert}
        for name in list(self.gates):
            gate = self.gates[name]
            if name not in wanted or gate.owner is not wanted[name]:
                self._disarm(name)
        for name, runner in wanted.items():
            if name not in self.gates:
                self.gates[name] = TriggerGate(
                    name, self._evaluator(name), runner.rule.min_interval,
                    settle_s=SETTLE_S, owner=runner)
            if runner.rule.on_change:
                watch = self.watches.get(name)
                if watch is None:
                    watch = self.watches[name] = ChangeWatch(
                        self.gates[name], runner.rule.change_threshold, loop,
                        self.change_observers)
                watch.attach(self.engine.streams, runner.stream_names)
        self.followers = {}
        for name, runner in wanted.items():
            for leader in runner.rule.on_alert:
                self.followers.setdefault(leader, []).append(name)
        self._want_thumbnails()

    def _want_thumbnails(self, *, release: bool = False) -> None:
        """Tell every stream whether a rule needs each of its frames' thumbnail."""
        wanted: set[str] = set()
        if not release:
            for runner in self.engine.runners.values():
                if runner.rule.on_change or runner.rule.skip_unchanged:
                    wanted.update(runner.stream_names)
        for name, stream in list(self.engine.streams.items()):
            demand = getattr(getattr(stream, "frames", None), "demand", None)
            if demand is not None:
                demand.set(THUMBNAILS, name in wanted)

    def on_step(self, rule: str, stream_key: str, state: AlertState,
                events: list[AlertEventRecord]) -> None:
        """Engine observer: a leader's ``firing`` asks its followers now."""
        followers = self.followers.get(rule)
        if not followers:
            return
        for event in events:
            if event.kind is not Kind.FIRING:
                continue
            answer = event.answer if isinstance(event.answer, Mapping) else {}
            trigger = Trigger("alert", stream=stream_key, leader=rule, answer=answer,
                              event_id=event.id)
            for follower in followers:
                gate = self.gates.get(follower)
                if gate is not None:
                    gate.request(trigger)

    async def aclose(self) -> None:
        for name in list(self.gates):
            await self._disarm_async(name)
        self._want_thumbnails(release=True)

    def _evaluator(self, name: str):  # type: ignore[no-untyped-def]
        async def evaluate(trigger: Trigger) -> None:
            runner = self.engine.runners.get(name)
            if runner is not None and name not in self.engine.paused:
                await runner.evaluate(trigger=trigger)

        return evaluate

    def _disarm(self, name: str) -> None:
        watch = self.watches.pop(name, None)
        if watch is not None:
            watch.detach()
        gate = self.gates.pop(name, None)
        if gate is not None and gate._task is not None:
            gate._pending = None
            gate._task.cancel()

    async def _disarm_async(self, name: str) -> None:
        watch = self.watches.pop(name, None)
        if watch is not None:
            watch.detach()
        gate = self.gates.pop(name, None)
        if gate is not None:
            await gate.aclose()
