"""Best-effort delivery of a pending step's notifications while the store is down.

Each action gets each event directly (a few tries), marked ``persisted: false``
(the event has no id yet), with the key the outbox would use; the actions it
reached are kept on the step, so once the store is back only the others get
outbox deliveries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from watcher.engine.steps import PendingStep, WriterStats
from watcher.store import AlertEventRecord, delivery_key

log = logging.getLogger("watcher.engine.pending")
"""The step writer's logger: these lines are part of its account of an outage."""

BEST_EFFORT_TRIES = 3
BEST_EFFORT_PAUSE_S = 1.0

Sleep = Callable[[float], Awaitable[Any]]


class Sender(Protocol):
    """What best-effort delivery needs of an action (:class:`~watcher.actions.base.Action`)."""

    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None: ...


def start_best_effort(step: PendingStep, actions: Mapping[str, Sender] | None,
                      stats: WriterStats, sleep: Sleep) -> None:
    """Deliver ``step`` best effort in a task of its own, unless that cannot or may not be."""
    if (step.delivering is not None or step.writing or not step.notifying
            or actions is None):
        return
    step.delivering = asyncio.create_task(_best_effort(step, actions, stats, sleep),
                                          name=f"best-effort:{step.rule}")


async def _best_effort(step: PendingStep, actions: Mapping[str, Sender], stats: WriterStats,
                       sleep: Sleep) -> None:
    for i, event in enumerate(step.events):
        for name in step.targets[i]:
            action = actions.get(name)
            if action is None or name in step.sent[i]:
                continue
            if await _try_send(action, name, replace(event, id=None), stats, sleep):
                step.sent[i].add(name)


async def _try_send(action: Sender, name: str, event: AlertEventRecord, stats: WriterStats,
                    sleep: Sleep) -> bool:
    key = delivery_key(event.event_key, name)
    for attempt in range(1, BEST_EFFORT_TRIES + 1):
        try:
            await action.send(event, key)
        except Exception as exc:  # DeliveryError, or a bug in the action
            if attempt == BEST_EFFORT_TRIES:
                stats.best_effort_failed += 1
                log.warning("alert %s on %s: best-effort delivery to %s failed "
                            "(%s); it stays owed once the store is back", event.rule,
                            event.stream_key, name, type(exc).__name__)
                return False
            await sleep(BEST_EFFORT_PAUSE_S * attempt)
        else:
            stats.best_effort += 1
            log.warning("alert %s on %s: %s delivered to %s best effort (not persisted: "
                        "the state store is unavailable)", event.rule, event.stream_key,
                        event.kind, name)
            return True
    return False
