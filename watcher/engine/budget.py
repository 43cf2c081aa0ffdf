"""Cost guard: caps on model calls and tokens per hour and per day.

A budget is set on a rule (``budget:``) or per model (``overshoot.budgets:
{MODEL: {...}}``, beside ``overshoot.prices``). Windows are fixed UTC clock
windows: the hour from :00 to :00, the day from 00:00 to 00:00 UTC, as
providers bill. Before each evaluation the runner asks :meth:`RuleBudget.blocked`;
while the rule's budget, or the budget of a model it asks first (its ``model``
or ``confirm.model``), is spent, the evaluation is skipped (``skipped_budget``)
and the alert state is left as it is, until the window rolls.

Spend is charged after each answer to the rule and to the model that answered
(a repair round is a second call). A call is never cut short, so a token cap
can be passed by the tokens of the answer that reached it. The current
windows' spend is written to the state store after each charge (in the
background, best effort) and read back at start, so a restart keeps counting;
a reload that drops a rule forgets its spend. In cluster mode each instance
counts what its own rules asked; a model's stored row is the last writer's.

When a budget is first found spent in a window, one warning is logged and, if
the budget names ``notify`` actions, each gets one message sent directly
(not through the outbox, so not retried), with the idempotency key
``budget:SCOPE:NAME:PERIOD:WINDOW_START_MS:ACTION``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from watcher.configbase import Section
from watcher.engine.state import Kind
from watcher.store.records import AlertEventRecord

log = logging.getLogger(__name__)

Period = Literal["hour", "day"]
PERIOD_MS: dict[Period, int] = {"hour": 3_600_000, "day": 86_400_000}
LIMITS: tuple[tuple[str, Period, Literal["calls", "tokens"]], ...] = (
    ("calls_per_hour", "hour", "calls"), ("tokens_per_hour", "hour", "tokens"),
    ("calls_per_day", "day", "calls"), ("tokens_per_day", "day", "tokens"))


class BudgetConfig(Section):
    """Caps on model calls and tokens, per fixed UTC hour and day."""

    calls_per_hour: int | None = Field(None, ge=1, description="Most model calls per clock "
                                       "hour (UTC).")
    calls_per_day: int | None = Field(None, ge=1, description="Most model calls per day "
                                      "(00:00 to 00:00 UTC).")
    tokens_per_hour: int | None = Field(None, ge=1, description="Most tokens (prompt + "
                                        "completion) per clock hour (UTC).")
    tokens_per_day: int | None = Field(None, ge=1, description="Most tokens (prompt + "
                                       "completion) per day (UTC).")
    notify: list[str] = Field(default_factory=list, description="Actions told once per "
                              "window when the budget is spent.")

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetConfig:
        if all(getattr(self, name) is None for name, _, _ in LIMITS):
            raise ValueError("set at least one of " + ", ".join(n for n, _, _ in LIMITS))
        return self


@dataclass(frozen=True, slots=True)
class Exhausted:
    """Which cap a budget has reached, and when its window rolls."""

    scope: Literal["rule", "model"]
    name: str
    period: Period
    unit: Literal["calls", "tokens"]
    limit: int
    spent: int
    window_start_ms: int
    resumes_ms: int

    def describe(self) -> str:
        when = "this hour" if self.period == "hour" else "today"
        return (f"{self.scope} {self.name} spent its budget: {self.spent} {self.unit} {when} "
                f"(limit {self.limit}); asks resume at {_iso(self.resumes_ms)}")


@dataclass(slots=True)
class _Window:
    start_ms: int = -1
    calls: int = 0
    tokens: int = 0


@dataclass(slots=True)
class Budget:
    """The spend of one rule or one model against its limits."""

    scope: Literal["rule", "model"]
    name: str
    limits: BudgetConfig
    windows: dict[Period, _Window] = field(
        default_factory=lambda: {"hour": _Window(), "day": _Window()})
    reported: set[tuple[Period, int]] = field(default_factory=set)
    """Windows already logged (and notified) as spent."""
    notified_before: set[tuple[Period, int]] = field(default_factory=set)
    """Windows found spent in the store at start: notified by the run before."""

    def _window(self, period: Period, now_ms: int) -> _Window:
        start = now_ms - now_ms % PERIOD_MS[period]
        window = self.windows[period]
        if window.start_ms != start:
            window.start_ms, window.calls, window.tokens = start, 0, 0
        return window

    def charge(self, calls: int, tokens: int, now_ms: int) -> None:
        for period in PERIOD_MS:
            window = self._window(period, now_ms)
            window.calls += calls
            window.tokens += tokens

    def exhausted(self, now_ms: int) -> Exhausted | None:
        """The first cap reached in the current windows, or None."""
        for name, period, unit in LIMITS:
            limit = getattr(self.limits, name)
            window = self._window(period, now_ms)
            spent = window.calls if unit == "calls" else window.tokens
            if limit is not None and spent >= limit:
                return Exhausted(self.scope, self.name, period, unit, limit, spent,
                                 window.start_ms, window.start_ms + PERIOD_MS[period])
        return None

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """Spend against limits, for ``/status``."""
        doc: dict[str, Any] = {"scope": self.scope, "name": self.name}
        for name, period, unit in LIMITS:
            window = self._window(period, now_ms)
            doc[f"{unit}_this_{period}"] = window.calls if unit == "calls" else window.tokens
            doc[name] = getattr(self.limits, name)
        spent = self.exhausted(now_ms)
        doc["exhausted"] = spent is not None
        doc["resumes_at"] = _iso(spent.resumes_ms) if spent is not None else None
        return doc


Send = Callable[[str, AlertEventRecord, str], Awaitable[None]]
"""``(action name, message, idempotency key)``: deliver one budget notice."""
SpendRow = tuple[str, str, str, int, int, int]
"""``(scope, name, period, window_start_ms, calls, tokens)``, as the store keeps it."""
Save = Callable[[list[SpendRow]], Awaitable[None]]


class BudgetGuard:
    """Every budget of the engine, by rule and by model; one per engine."""

    def __init__(self, model_budgets: Mapping[str, BudgetConfig] | None = None, *,
                 send: Send | None = None, save: Save | None = None) -> None:
        """``send`` delivers notices; ``save`` keeps spend rows (the state store)."""
        self.models = {name: Budget("model", name, limits)
                       for name, limits in (model_budgets or {}).items()}
        self.rules: dict[str, Budget] = {}
        self.send = send
        self.save = save
        self._tasks: set[asyncio.Task[None]] = set()
        self._stored: dict[tuple[str, str, str], tuple[int, int, int]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._saving: asyncio.Task[None] | None = None
        self._restored_ms = 0

    def restore(self, rows: Iterable[SpendRow], now_ms: int) -> None:
        """Start from stored spend (rows of windows that have rolled since count nothing).

        A budget already spent was notified by the run before: it is logged again
        when it stops a rule, but not notified again in that window."""
        self._stored = {(scope, name, period): (start, calls, tokens)
                        for scope, name, period, start, calls, tokens in rows}
        self._restored_ms = now_ms
        for budget in (*self.rules.values(), *self.models.values()):
            self._seed(budget)

    def _seed(self, budget: Budget) -> None:
        for period, window in budget.windows.items():
            stored = self._stored.get((budget.scope, budget.name, period))
            if stored is not None:
                window.start_ms, window.calls, window.tokens = stored
        spent = budget.exhausted(self._restored_ms) if self._stored else None
        if spent is not None:
            budget.notified_before.add((spent.period, spent.window_start_ms))

    def charged(self, budget: Budget) -> None:
        """Write ``budget``'s spend soon (one write at a time; later charges coalesce)."""
        if self.save is None:
            return
        self._dirty.add((budget.scope, budget.name))
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save_dirty())

    async def _save_dirty(self) -> None:
        assert self.save is not None
        while self._dirty:
            keys, self._dirty = self._dirty, set()
            budgets = [b for b in (*self.rules.values(), *self.models.values())
                       if (b.scope, b.name) in keys]
            rows = [(b.scope, b.name, period, w.start_ms, w.calls, w.tokens)
                    for b in budgets for period, w in b.windows.items() if w.start_ms >= 0]
            try:
                await self.save(rows)
            except Exception as exc:  # best effort: the next charge writes the totals again
                log.debug("cannot store budget spend: %s", exc)

    def for_rule(self, rule: str, limits: BudgetConfig | None,
                 models: Iterable[str]) -> RuleBudget | None:
        """The budgets a rule's runner checks and charges (None: nothing to check).

        A rule that keeps its name keeps its spend when its limits change."""
        own = None
        if limits is not None:
            own = self.rules.get(rule)
            if own is None:
                own = self.rules[rule] = Budget("rule", rule, limits)
                self._seed(own)
            own.limits = limits
        else:
            self.rules.pop(rule, None)
        first = [self.models[m] for m in dict.fromkeys(models) if m in self.models]
        if own is None and not first:
            return None
        return RuleBudget(self, own, first)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the spend of rules no longer configured."""
        kept = set(keep)
        for rule in [r for r in self.rules if r not in kept]:
            del self.rules[rule]

    def snapshot(self, now_ms: int) -> list[dict[str, Any]]:
        return [b.snapshot(now_ms) for b in (*self.rules.values(), *self.models.values())]

    def report(self, budget: Budget, spent: Exhausted, now_ms: int) -> None:
        """Log (and notify) a spent budget once per window."""
        key = (spent.period, spent.window_start_ms)
        if key in budget.reported:
            return
        budget.reported = {(p, start) for p, start in budget.reported
                           if start + PERIOD_MS[p] > now_ms}
        budget.reported.add(key)
        log.warning("%s", spent.describe())
        if self.send is None or key in budget.notified_before:
            return
        for action in budget.limits.notify:
            task = asyncio.get_running_loop().create_task(
                self._notify(action, spent, now_ms))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _notify(self, action: str, spent: Exhausted, now_ms: int) -> None:
        assert self.send is not None
        key = (f"budget:{spent.scope}:{spent.name}:{spent.period}:"
               f"{spent.window_start_ms}:{action}")
        try:
            await self.send(action, notice(spent, now_ms), key)
        except Exception as exc:  # any channel error: the notice is best effort
            log.warning("budget notice to action %s failed: %s", action, exc)

    async def drain(self) -> None:
        """Wait for the notices being sent and the spend being written."""
        while self._tasks or (self._saving is not None and not self._saving.done()):
            pending = [*self._tasks, *([self._saving] if self._saving is not None else [])]
            await asyncio.gather(*pending, return_exceptions=True)


@dataclass(slots=True)
class RuleBudget:
    """What one rule's runner checks before asking and charges after."""

    guard: BudgetGuard
    own: Budget | None
    models: list[Budget]

    def blocked(self, now_ms: int) -> Exhausted | None:
        """The spent budget that stops this rule now (reported once per window), or None."""
        for budget in ([self.own] if self.own is not None else []) + self.models:
            spent = budget.exhausted(now_ms)
            if spent is not None:
                self.guard.report(budget, spent, now_ms)
                return spent
        return None

    def charge(self, model: str, calls: int, tokens: int, now_ms: int) -> None:
        if self.own is not None:
            self.own.charge(calls, tokens, now_ms)
            self.guard.charged(self.own)
        budget = self.guard.models.get(model)
        if budget is not None:
            budget.charge(calls, tokens, now_ms)
            self.guard.charged(budget)


def notice(spent: Exhausted, now_ms: int) -> AlertEventRecord:
    """The message a ``notify`` action gets, shaped like an alert event so every channel
    and template can render it: rule ``budget:SCOPE:NAME``, stream ``budget``, label
    ``reason: budget``, the spend in ``answer`` (its ``description`` says it in words)."""
    return AlertEventRecord(
        event_key=f"budget:{spent.scope}:{spent.name}:{spent.period}:{spent.window_start_ms}",
        rule=f"budget:{spent.scope}:{spent.name}", stream_key="budget", episode=0,
        kind=Kind.FIRING, notify=True, created_ms=now_ms, severity="warning",
        labels={"reason": "budget", "scope": spent.scope, "name": spent.name},
        answer={"budget": spent.scope, "name": spent.name, "period": spent.period,
                "unit": spent.unit, "limit": spent.limit, "spent": spent.spent,
                "resumes_at": _iso(spent.resumes_ms), "description": spent.describe()})


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
