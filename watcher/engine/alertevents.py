"""The alert event a transition becomes, and the actions it is delivered to.

Who gets an event (:func:`delivery_targets`): ``firing`` and ``repeat`` go to
every action of the rule, ``resolved`` only to those with ``send_resolved``,
and events with ``notify=False`` (suppressed by cooldown) to none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

import cv2

from watcher.engine.evaluation import Evaluation
from watcher.engine.rules import RuleConfig
from watcher.engine.state import Kind, Transition
from watcher.engine.store import AlertEventRecord
from watcher.errors import OvershootError
from watcher.media.tracks import LatestFrame, to_bgr
from watcher.overshoot.client import OvershootClient

SNAPSHOT_QUALITY = 85


class Deliverable(Protocol):
    """What the runner needs to know of an action (an :class:`~watcher.actions.base.Action`)."""

    @property
    def send_resolved(self) -> bool: ...


def delivery_targets(rule_actions: Sequence[str], event: AlertEventRecord,
                     actions: Mapping[str, Deliverable]) -> list[str]:
    """The names of the rule's actions ``event`` is delivered to.

    A name missing from ``actions`` still gets firing and repeat events, so
    the outbox dead-letters them visibly ("unknown action") rather than the
    alert vanishing; it cannot say ``send_resolved``, so gets no resolved.
    """
    if not event.notify:
        return []
    if event.kind is Kind.RESOLVED:
        return [n for n in rule_actions if n in actions and actions[n].send_resolved]
    return list(rule_actions)


class EventMaker:
    """Turns one rule's transitions into events carrying their evidence."""

    def __init__(self, rule: RuleConfig, stream_names: list[str], client: OvershootClient,
                 *, window_ms: int | None, console_url: str | None) -> None:
        self.rule = rule
        self.stream_names = stream_names
        self.stream_key = "+".join(stream_names)
        self.client = client
        self.window_ms = window_ms
        self.console_url = console_url

    async def make(self, transition: Transition, result: Evaluation,
                   frames: LatestFrame | None, ids: list[str], *, prompt: str,
                   first_match_ms: int | None, silenced_by: str | None = None,
                   trigger: str = "tick") -> AlertEventRecord:
        """The event of ``transition``: the answer that decided it (the confirming one
        when valid), the picture being published now and the stream time of ``ids[0]``."""
        answer = result.confirm if result.confirm is not None and result.confirm.valid else (
            result.answer)
        snapshot = await _snapshot(frames) if frames is not None else None
        stream_time = await self._stream_time(ids[0]) if ids else None
        return AlertEventRecord.from_transition(
            self.rule.name, self.stream_key, transition,
            severity=self.rule.severity,
            labels=dict(self.rule.labels),
            answer=answer.data if answer is not None else None,
            urls=answer.urls if answer is not None else [],
            stream_ids=ids,
            stream_time_ms=stream_time,
            model=answer.model if answer is not None else None,
            usage=({"prompt_tokens": answer.prompt_tokens,
                    "completion_tokens": answer.completion_tokens}
                   if answer is not None else None),
            snapshot=snapshot,
            silenced_by=silenced_by,
            extra={"streams": self.stream_names, "prompt": prompt,
                   "confirmed": result.confirmed,
                   "trigger": trigger,
                   "confirm_answer": (result.confirm.data if result.confirm is not None
                                      else None),
                   "latency_s": (round(answer.latency_s, 3) if answer is not None else None),
                   "first_match_ms": (first_match_ms if first_match_ms is not None
                                      else transition.at_ms),
                   "window_ms": self.window_ms,
                   **({"console_url": self.console_url} if self.console_url else {})},
        )

    async def _stream_time(self, stream_id: str) -> int | None:
        try:
            return (await self.client.get_stream(stream_id)).stream_time_ms
        except OvershootError:
            return None


async def _snapshot(frames: LatestFrame) -> bytes | None:
    """The frame being published right now, as JPEG (a passthrough stream's is decoded
    from its packets, in a worker thread)."""
    frame = await frames.newest()
    if frame is None:
        return None

    def encode() -> bytes | None:
        ok, buf = cv2.imencode(".jpg", to_bgr(frame),
                               [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_QUALITY])
        return buf.tobytes() if ok else None

    return await asyncio.to_thread(encode)
