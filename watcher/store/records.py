"""What the store keeps: recorded alert events and their outbox deliveries.

Plain frozen dataclasses, independent of the database they come from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from watcher.engine.state import Kind, Transition

MAX_ERROR_CHARS = 500
"""``last_error`` is cut to this many characters."""


def event_key(rule: str, stream_key: str, transition: Transition) -> str:
    """Stable id of one event, later the delivery Idempotency-Key.

    The time is part of it so that a rule removed (:meth:`AlertStore.forget`)
    and added again, restarting at episode 1, never collides with old events.
    """
    t = transition
    return f"{rule}:{stream_key}:{t.episode}:{t.kind}:{t.at_ms}"


def delivery_key(event_key: str, action: str) -> str:
    """The Idempotency-Key of delivering one event to one action."""
    return f"{event_key}:{action}"


@dataclass(frozen=True, slots=True)
class AlertEventRecord:
    """One recorded transition with its evidence. ``id`` is set once stored."""

    event_key: str
    rule: str
    stream_key: str
    episode: int
    kind: Kind
    notify: bool
    created_ms: int
    severity: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    answer: Any = None
    """The validated JSON answer that decided the verdict."""
    urls: tuple[str, ...] = ()
    """The ovs:// frame or window references the model was shown."""
    stream_ids: tuple[str, ...] = ()
    stream_time_ms: int | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    snapshot: bytes | None = field(default=None, repr=False)
    snapshot_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    silenced_by: str | None = None
    """The id of the silence that kept this event from notifying."""
    id: int | None = None

    @property
    def status(self) -> str:
        """``firing`` (for firing and repeat events) or ``resolved``."""
        return "resolved" if self.kind is Kind.RESOLVED else "firing"

    @classmethod
    def from_transition(
        cls, rule: str, stream_key: str, transition: Transition, **evidence: Any
    ) -> AlertEventRecord:
        """The record of ``transition``; ``evidence`` fills the optional fields."""
        if evidence.get("snapshot") is not None:
            evidence.setdefault("snapshot_type", "image/jpeg")
        return cls(
            event_key=event_key(rule, stream_key, transition), rule=rule,
            stream_key=stream_key, episode=transition.episode, kind=transition.kind,
            notify=transition.notify, created_ms=transition.at_ms, **evidence,
        )


ActionsFor = Callable[[AlertEventRecord], Iterable[str]]
"""Names the actions a notifying event goes to."""


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    SENT = "sent"
    DEAD = "dead"
    SUMMARIZED = "summarized"


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One (event, action) delivery in the outbox."""

    id: int
    event_id: int
    action: str
    idempotency_key: str
    status: DeliveryStatus
    attempts: int
    next_attempt_ms: int
    created_ms: int
    updated_ms: int
    sent_ms: int | None = None
    last_error: str | None = None
    summary_id: str | None = None
    """The idempotency key of the summary message that stood for this delivery."""
    claimed_by: str | None = None
    """The store instance that last claimed it (``delivering``, or who finished it)."""
    claim_expires_ms: int | None = None
    """While ``delivering``: when the claim lapses and any instance may take it again."""


def bounded_error(error: str) -> str:
    """``error`` cut to :data:`MAX_ERROR_CHARS`."""
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
