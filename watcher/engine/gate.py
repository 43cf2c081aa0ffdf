"""Acknowledgements and silences applied to the transitions of one alert step."""

from __future__ import annotations

import logging
from dataclasses import replace

from watcher.engine.silences import AlertLabels, SilenceBook
from watcher.engine.state import AlertState, Kind, Transition
from watcher.engine.store import AlertStore, StoreError

log = logging.getLogger(__name__)


async def gate_step(labels: AlertLabels, previous: AlertState, state: AlertState,
                    transitions: list[Transition], *, store: AlertStore | None,
                    silences: SilenceBook | None,
                    ) -> tuple[AlertState, list[Transition], dict[int, str]]:
    """Apply acknowledgements and silences to a step's transitions.

    A ``repeat`` of an acknowledged episode is dropped (acks stop repeats until the
    alert resolves). A notifying transition that an active silence matches is kept
    but does not notify; a silenced firing leaves the episode un-notified, so its
    resolve is not sent either. ``previous`` is the alert's state before the step.
    Returns the state, the transitions and, by index, the silences that held them.
    """
    kept: list[Transition] = []
    silenced_by: dict[int, str] = {}
    for t in transitions:
        if t.kind is Kind.REPEAT and await _acked(store, labels, t.episode):
            continue
        silence = (silences.match(labels, t.at_ms)
                   if t.notify and silences is not None else None)
        if silence is not None:
            if t.kind is Kind.FIRING:
                state = replace(state, episode_notified=False)
            elif t.kind is Kind.REPEAT:
                state = replace(state, episode_notified=previous.episode_notified)
            silenced_by[len(kept)] = silence.id
            t = replace(t, notify=False)
        kept.append(t)
    return state, kept, silenced_by


async def _acked(store: AlertStore | None, labels: AlertLabels, episode: int) -> bool:
    """Whether the episode is acknowledged (the store unreadable: not, so repeats go)."""
    if store is None:
        return False
    key = (labels.rule, labels.stream_key, episode)
    try:
        return key in await store.acks([key])
    except StoreError as exc:
        log.warning("rule %s: cannot read acknowledgements: %s", labels.rule, exc)
        return False
