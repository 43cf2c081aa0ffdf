"""What one rule evaluation did, and the counters a rule keeps across evaluations."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from watcher.engine.ask import Answer
from watcher.engine.state import AlertState, Transition

SAMPLES_KEPT = 1000
"""Latency samples kept between two metrics scrapes. Without a scraper (no status
listener) they are never read, so the buffer must stay small however long the run."""

Outcome = Literal["not_ready", "over_budget", "unchanged", "answered", "invalid",
                  "model_error", "condition_error"]


@dataclass(slots=True)
class RuleStats:
    evaluations: int = 0
    skipped_not_ready: int = 0
    skipped_unchanged: int = 0
    skipped_budget: int = 0
    """Evaluations skipped because the rule's or its model's budget was spent."""
    model_calls: int = 0
    invalid_answers: int = 0
    model_errors: int = 0
    condition_errors: int = 0
    confirmations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    events: int = 0
    by_trigger: dict[str, int] = field(default_factory=dict)
    """Evaluations by what caused them: ``tick``, ``change``, ``alert``."""
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))
    """Model latencies since the last read by metrics (the newest SAMPLES_KEPT)."""


@dataclass(slots=True)
class Evaluation:
    """What one evaluation did (printed by ``watcher test-rule``, logged at DEBUG)."""

    rule: str
    stream_key: str
    outcome: Outcome
    answer: Answer | None = None
    matched: bool | None = None
    confirm: Answer | None = None
    confirmed: bool | None = None
    state: AlertState | None = None
    transitions: list[Transition] = field(default_factory=list)
    event_ids: list[int] = field(default_factory=list)
    detail: str | None = None
    trigger: str = "tick"
