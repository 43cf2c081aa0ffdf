"""A rule's (or its confirm block's) question and condition, compiled for asking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from watcher.engine.ask import Question
from watcher.engine.condition import Condition, default_condition
from watcher.engine.schema import schema_fields


@dataclass(frozen=True, slots=True)
class RuleQuestion:
    """What is asked, and the condition that makes its answer a match."""

    question: Question
    condition: Condition


def compile_question(name: str, spec: Any, default_model: str) -> RuleQuestion:
    """``spec`` (a :class:`~watcher.engine.rules.RuleConfig` or its ``confirm``) compiled."""
    fields = schema_fields(spec.schema)
    expr = spec.when or default_condition(fields)
    if expr is None:
        raise ValueError(f"rule {name}: no condition")
    question = Question(
        prompt=spec.prompt, schema=spec.schema, model=spec.model or default_model,
        fallback_models=tuple(getattr(spec, "fallback_models", ()) or ()),
        window_ms=to_ms(spec.window), max_fps=spec.max_fps,
        max_tokens=getattr(spec, "max_tokens", None) or 300,
        schema_name=_schema_name(name))
    return RuleQuestion(question, Condition(expr, fields))


def to_ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _schema_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "answer"
