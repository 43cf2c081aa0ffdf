"""An alert step waiting to be written, and the counters of the writer that keeps it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from watcher.engine.state import AlertState
from watcher.store import AlertEventRecord
from watcher.store.evidence import EVIDENCE_COLUMNS


@dataclass(eq=False, slots=True)
class PendingStep:
    rule: str
    stream_key: str
    state: AlertState
    events: list[AlertEventRecord]
    targets: list[list[str]]
    """Per event, the actions it goes to."""
    queued_ms: int
    sent: list[set[str]] = field(default_factory=list)
    """Per event, the actions that got it best effort."""
    delivering: asyncio.Task[None] | None = None
    fence: Any = None
    """Cluster mode: the fence the write carries."""
    writing: bool = False
    """A write of it is in flight: no best-effort delivery may start (it could race the
    outbox deliveries the write creates)."""

    @property
    def notifying(self) -> bool:
        return any(self.targets)

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.stream_key

    def remaining(self, event: AlertEventRecord) -> list[str]:
        """The actions still owed ``event`` (those best-effort delivery did not reach)."""
        i = self.events.index(event)
        return [n for n in self.targets[i] if n not in self.sent[i]]


@dataclass(slots=True)
class WriterStats:
    queued: int = 0
    """Steps that could not be written at once."""
    recorded_late: int = 0
    """Pending steps written once the store was back."""
    best_effort: int = 0
    """Notifications delivered best effort (not persisted yet)."""
    best_effort_failed: int = 0
    dropped: int = 0
    """Pending records dropped past the hard limit (their notifications were attempted)."""
    evidence_dropped: int = 0
    """Events whose stored evidence was dropped (budget or full store)."""


def evidence_size(event: AlertEventRecord) -> int:
    return sum(len(getattr(event, c) or b"") for c in EVIDENCE_COLUMNS)


def strip_evidence(step: PendingStep) -> None:
    """Drop the evidence of a pending step (its records stay)."""
    if any(evidence_size(e) for e in step.events):
        cleared: dict[str, Any] = {c: None for c in EVIDENCE_COLUMNS}
        step.events = [replace(e, **cleared, snapshot_type=None) for e in step.events]
