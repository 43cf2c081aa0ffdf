"""The engine's triggered rules: a gate per ``on_change``/``on_alert`` rule, kept in step
with its runners (:meth:`TriggeredRules.arm` after start and every reload).

* ``on_change``: a :class:`~watcher.engine.triggers.ChangeWatch` on each of the
  rule's streams requests a ``change`` trigger;
* ``on_alert``: :meth:`TriggeredRules.on_step` (an engine observer) requests an
  ``alert`` trigger for each follower when a leader's step records a ``firing``.

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
from watcher.engine.triggers import SETTLE_S, ChangeWatch, Trigger, TriggerGate


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
                        self.gates[name], runner.rule.change_threshold, loop)
                watch.attach(self.engine.streams, runner.stream_names)
        self.followers = {}
        for name, runner in wanted.items():
            for leader in runner.rule.on_alert:
                self.followers.setdefault(leader, []).append(name)

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
