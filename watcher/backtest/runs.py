"""What a replay records per rule and model: answers over time, episodes and spend."""

from __future__ import annotations

from dataclasses import dataclass, field

from watcher.backtest.score import Episode
from watcher.engine.ask import Answer
from watcher.engine.rules import RuleConfig
from watcher.engine.runner import RuleRunner
from watcher.engine.schema import schema_fields
from watcher.engine.triggers import Trigger
from watcher.media.changes import ChangeDetector


@dataclass
class Point:
    """One answer: video time and the charted field's value (None: no valid answer)."""

    t: float
    value: float | None
    trigger: str


@dataclass
class RuleRun:
    """One rule replayed with one model: what the report is made of."""

    rule: RuleConfig
    model: str
    runner: RuleRunner
    field: str | None
    episodes: list[Episode] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_by_model: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """model -> (calls, prompt tokens, completion tokens)."""
    fallbacks: int = 0
    triggers: dict[str, int] = field(default_factory=dict)
    next_tick: float | None = None
    detector: ChangeDetector | None = None
    pending_at: float | None = None
    pending: Trigger | None = None
    last_ask: float = float("-inf")

    def count(self, answer: Answer | None) -> None:
        if answer is None or not answer.urls:
            return
        self.calls += 1
        self.prompt_tokens += answer.prompt_tokens
        self.completion_tokens += answer.completion_tokens
        calls, p, c = self.tokens_by_model.get(answer.model, (0, 0, 0))
        self.tokens_by_model[answer.model] = (calls + 1, p + answer.prompt_tokens,
                                              c + answer.completion_tokens)
        self.fallbacks += bool(answer.fallbacks_used)


@dataclass
class ReplayResult:
    stream: str
    duration_s: float
    frames: int
    runs: list[RuleRun]
    wall_s: float


def chart_field(rule: RuleConfig) -> str | None:
    """The answer field charted over time: the first boolean, else the first number."""
    fields = schema_fields(rule.schema)
    for wanted in ("boolean", "integer", "number"):
        for name, kind in fields.items():
            if kind == wanted:
                return name
    return None
