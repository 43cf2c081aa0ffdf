"""One rule's evaluation: from "is the stream there?" to a recorded alert event.

::

    streams live?  --no-->  skipped (not ready), counted; the alert state is untouched
    skip_unchanged and the picture has not changed?  --yes-->  reuse the last answer
    ask the model (retries, fallbacks, one repair round)
    invalid answer / model down  -->  counted; verdict None (state untouched)
    condition on the answer  -->  matched True/False
    would this match fire?  and confirm:  -->  ask the confirming model; its verdict wins
    state machine step  -->  transitions
    transitions  -->  events with evidence, written with the new state in one transaction,
                      each notifying event with one outbox delivery per action it goes to
    stored  -->  ``on_recorded()`` wakes the outbox; notifying events are handed to ``emit``

Who gets an event is :func:`~watcher.engine.alertevents.delivery_targets`;
acknowledgements and silences are applied by :func:`~watcher.engine.gate.gate_step`,
and events are made by :class:`~watcher.engine.alertevents.EventMaker`. Delivery
itself is the outbox's job (:mod:`watcher.actions.outbox`); ``emit`` is only
an in-process observer (tests, live views) and is never needed to deliver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from watcher.actions.templates import compile_template
from watcher.clock import Clock
from watcher.engine.alertevents import Deliverable, EventMaker, delivery_targets
from watcher.engine.ask import Answer, ModelsExhausted, StreamNotReady, ask
from watcher.engine.budget import RuleBudget
from watcher.engine.condition import ConditionError
from watcher.engine.evaluation import Evaluation, RuleStats
from watcher.engine.gate import gate_step
from watcher.engine.pending import StepWriter
from watcher.engine.questions import RuleQuestion, compile_question, to_ms
from watcher.engine.rules import RuleConfig
from watcher.engine.silences import AlertLabels, SilenceBook
from watcher.engine.state import AlertPolicy, AlertState, Kind, Status
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.engine.triggers import TICK, Trigger
from watcher.errors import LeaseLostError, OvershootError
from watcher.media.changes import ChangeTracker
from watcher.media.tracks import LatestFrame
from watcher.overshoot.client import OvershootClient

log = logging.getLogger(__name__)

MAX_REUSE_S = 300.0
"""``skip_unchanged`` asks again at least this often, even if nothing changed."""

Emit = Callable[[list[AlertEventRecord]], Awaitable[None]]
OnRecorded = Callable[[], None]
"""Called after a step stored deliveries (the outbox's ``wake``)."""
OnStored = Callable[[list[AlertEventRecord]], None]
"""Called with every stored event, notifying or not (evidence clips)."""
HISTORY_KEPT = 240
"""Evaluations kept per rule for the console's chart."""
StepObserver = Callable[[str, str, AlertState, list[AlertEventRecord]], None]
"""``(rule, stream_key, new state, stored events)`` after a step that changed an alert."""
FenceFor = Callable[[Sequence[str]], Any]
"""Cluster mode: the fence a rule's writes carry, given its stream names (passed to
``store.record(fence=...)``); raises :class:`~watcher.errors.LeaseLostError` when this
instance no longer owns those streams' group."""


class LiveStream(Protocol):
    """What a rule needs of a kept stream (a :class:`~watcher.keeper.keeper.StreamKeeper`)."""

    stream_id: str | None
    frames: LatestFrame
    changes: ChangeTracker
    source_live: bool
    source_resumed_at: float | None


class RuleRunner:
    def __init__(
        self,
        rule: RuleConfig,
        *,
        default_model: str,
        client: OvershootClient,
        streams: Mapping[str, LiveStream],
        store: AlertStore | None,
        clock: Clock,
        emit: Emit | None = None,
        state: AlertState | None = None,
        actions: Mapping[str, Deliverable] | None = None,
        on_recorded: OnRecorded | None = None,
        fence: FenceFor | None = None,
        writer: StepWriter | None = None,
        silences: SilenceBook | None = None,
        on_stored: OnStored | None = None,
        console_url: str | None = None,
    ) -> None:
        """``actions`` (name -> action) turns on deliveries: without it, events are
        stored with none (``test-rule``, tests). ``fence`` (cluster mode) guards every
        write: a step whose fence is refused records nothing and changes no state.
        ``writer`` (shared by the engine's runners) writes the steps to ``store`` and
        keeps them while it fails. ``silences`` keeps matching events from notifying;
        an acknowledged episode (in the store) gets no repeats. ``console_url``
        (``status.public_url``) is kept with each event for links."""
        self.rule = rule
        self.client = client
        self.streams = streams
        self.store = store
        self.clock = clock
        self.emit = emit
        self.actions = actions
        self.on_recorded = on_recorded
        self.observers: list[StepObserver] = []
        self.monotonic: Callable[[], float] = time.monotonic
        """The clock of change times and ask times (a backtest replays on its own)."""
        self.fence = fence
        self.silences = silences
        self.on_stored = on_stored
        self.console_url = console_url
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_KEPT)
        """The latest evaluations: ``{at_ms, outcome, matched, answer, latency_s}``."""
        self.stream_names = list(rule.stream_names)
        self.stream_key = "+".join(self.stream_names)
        self.primary = compile_question(rule.name, rule, default_model)
        self.confirm = (compile_question(f"{rule.name}-confirm", rule.confirm,
                                         rule.model or default_model)
                        if rule.confirm is not None else None)
        self.policy = AlertPolicy(
            for_count=rule.for_count, for_ms=rule.for_ms,
            keep_firing_for_ms=to_ms(rule.keep_firing_for) or 0,
            cooldown_ms=to_ms(rule.cooldown) or 0,
            repeat_every_ms=to_ms(rule.repeat_every))
        self.writer = writer if writer is not None or store is None else StepWriter(
            store, clock=clock)
        self.state = state or AlertState()
        self.stats = RuleStats()
        self.last_answer_ms: int | None = None
        """When the model last answered this rule (valid or not)."""
        self.model_error: tuple[int, str] | None = None
        """(when, why) the model last failed to answer, if it has not answered since."""
        self.budget: RuleBudget | None = None
        """Set by the engine when the rule or a model it asks has a budget."""
        self._lock = asyncio.Lock()
        self._last_answer: Answer | None = None
        self._last_versions: tuple[int, ...] | None = None
        self._last_asked_s = 0.0
        self._prompt_template = (compile_template(rule.prompt) if rule.on_alert else None)
        self._events = EventMaker(rule, self.stream_names, client,
                                  window_ms=self.primary.question.window_ms,
                                  console_url=console_url)

    def _prompt(self, trigger: Trigger) -> str | None:
        """The prompt rendered with ``trigger`` (rules with ``on_alert``), else None."""
        if self._prompt_template is None:
            return None
        try:
            return self._prompt_template.render(trigger=trigger.variables())
        except Exception as exc:  # a template can raise anything; ask the prompt as written
            log.warning("rule %s: cannot render its prompt (%s); asking it as written",
                        self.rule.name, exc)
            return self.rule.prompt

    async def evaluate(self, *, record: bool = True, trigger: Trigger = TICK) -> Evaluation:
        """Evaluate once; with ``record=False`` nothing is stored or sent (``test-rule``).

        ``trigger`` says why; a ``change`` trigger's window ends at its ``end_at``."""
        async with self._lock:
            return await self._evaluate(record, trigger)

    async def _evaluate(self, record: bool, trigger: Trigger = TICK) -> Evaluation:
        result = Evaluation(self.rule.name, self.stream_key, "not_ready", trigger=trigger.kind)
        live = [self.streams.get(name) for name in self.stream_names]
        stream_ids = [s.stream_id if s is not None else None for s in live]
        if any(sid is None for sid in stream_ids):
            self.stats.skipped_not_ready += 1
            result.detail = "stream not live yet"
            return result
        if blind := self._blind(live):  # type: ignore[arg-type]
            self.stats.skipped_not_ready += 1
            result.detail = blind
            return result
        if self.budget is not None and (spent := self.budget.blocked(self.clock.now_ms())):
            self.stats.skipped_budget += 1
            result.outcome, result.detail = "over_budget", spent.describe()
            return result
        self.stats.evaluations += 1
        self.stats.by_trigger[trigger.kind] = self.stats.by_trigger.get(trigger.kind, 0) + 1
        ids: list[str] = stream_ids  # type: ignore[assignment]
        versions = tuple(s.changes.version for s in live)  # type: ignore[union-attr]
        if trigger.kind == "tick" and self._unchanged(versions, live):  # type: ignore[arg-type]
            self.stats.skipped_unchanged += 1
            result.outcome, result.answer = "unchanged", self._last_answer
            matched = self._verdict(self.primary, self._last_answer, result)
        else:
            asked_at = self.monotonic()
            answer = await self._ask(self.primary, ids, result, trigger)
            if answer is None:
                return await self._finish(result, None, live, ids, record, trigger)
            result.answer = answer
            if answer.valid:
                self._last_answer, self._last_versions = answer, versions
                self._last_asked_s = asked_at
            matched = self._verdict(self.primary, answer, result)
        if matched and self.confirm is not None and self._would_fire():
            matched = await self._confirmed(ids, result)
        return await self._finish(result, matched, live, ids, record, trigger)

    # -- asking --------------------------------------------------------------
    async def _ask(self, spec: RuleQuestion, ids: list[str], result: Evaluation,
                   trigger: Trigger = TICK) -> Answer | None:
        end_back_ms = (max(0, round((self.monotonic() - trigger.end_at) * 1000))
                       if trigger.end_at is not None else 0)
        prompt = self._prompt(trigger) if spec is self.primary else None
        try:
            async with asyncio.timeout(self.rule.timeout):
                answer = await ask(self.client, spec.question, ids, self.stream_names,
                                   end_back_ms=end_back_ms, prompt=prompt)
        except TimeoutError:
            self.stats.model_errors += 1
            result.outcome = "model_error"
            result.detail = f"no answer within the rule's timeout ({self.rule.timeout:g} s)"
            self.model_error = (self.clock.now_ms(), result.detail)
            log.warning("rule %s: %s", self.rule.name, result.detail)
            return None
        except StreamNotReady as exc:
            self.stats.skipped_not_ready += 1
            result.outcome, result.detail = "not_ready", str(exc)
            return None
        except (ModelsExhausted, OvershootError) as exc:
            self.stats.model_errors += 1
            result.outcome, result.detail = "model_error", str(exc)
            self.model_error = (self.clock.now_ms(), result.detail)
            log.warning("rule %s: no answer: %s", self.rule.name, exc)
            return None
        self.last_answer_ms, self.model_error = self.clock.now_ms(), None
        self.stats.model_calls += 1
        if self.budget is not None:
            self.budget.charge(answer.model, 1 + answer.repaired,
                               answer.prompt_tokens + answer.completion_tokens,
                               self.clock.now_ms())
        self.stats.prompt_tokens += answer.prompt_tokens
        self.stats.completion_tokens += answer.completion_tokens
        self.stats.latencies_s.append(answer.latency_s)
        if not answer.valid:
            self.stats.invalid_answers += 1
            result.outcome, result.detail = "invalid", answer.error
        else:
            result.outcome = "answered"
        return answer

    def _verdict(self, spec: RuleQuestion, answer: Answer | None,
                 result: Evaluation) -> bool | None:
        if answer is None or answer.data is None:
            return None
        try:
            matched = spec.condition.evaluate(answer.data)
        except ConditionError as exc:
            self.stats.condition_errors += 1
            result.outcome, result.detail = "condition_error", str(exc)
            log.warning("rule %s: %s", self.rule.name, exc)
            return None
        result.matched = matched
        return matched

    async def _confirmed(self, ids: list[str], result: Evaluation) -> bool | None:
        """Ask the confirming model; its verdict decides whether the match counts."""
        assert self.confirm is not None
        self.stats.confirmations += 1
        scratch = Evaluation(self.rule.name, self.stream_key, "answered")
        answer = await self._ask(self.confirm, ids, scratch)
        result.confirm = answer
        verdict = self._verdict(self.confirm, answer, scratch)
        result.confirmed = verdict
        if verdict is None:
            result.detail = scratch.detail
        return verdict

    def _blind(self, live: Sequence[LiveStream]) -> str | None:
        """Why the streams cannot answer now: a camera is down, or back for less than a window.

        While a source is down its stream repeats the last frame; an answer about that
        frozen picture ("no motion") would be wrong, so the rule waits (state unchanged).
        A window reaching back before the camera came back would mix both pictures.
        """
        asks = (self.primary, self.confirm) if self.confirm is not None else (self.primary,)
        window_s = max(a.question.window_ms or 0 for a in asks) / 1000
        now = self.monotonic()
        for name, stream in zip(self.stream_names, live, strict=True):
            if not stream.source_live:
                return f"source {name} is down"
            resumed = stream.source_resumed_at
            if resumed is not None and now - resumed < window_s:
                return (f"source {name} came back {now - resumed:.1f} s ago; waiting for a "
                        f"full {window_s:g} s window")
        return None

    def _unchanged(self, versions: tuple[int, ...], live: Sequence[LiveStream]) -> bool:
        """Whether the last answer still holds: nothing changed since it was asked.

        A window answer ("motion in the last 10 s") describes the window, not the
        picture: it is reused only if the window it saw held no change either.
        """
        if not (self.rule.skip_unchanged and self._last_answer is not None
                and self._last_versions == versions
                and self.monotonic() - self._last_asked_s < MAX_REUSE_S):
            return False
        window_ms = self.primary.question.window_ms
        if not window_ms:
            return True
        last_change = max(s.changes.changed_at for s in live)
        return last_change <= self._last_asked_s - window_ms / 1000

    def models_asked_first(self) -> list[str]:
        """The models this rule asks before any fallback: its own and its confirm's."""
        first = [self.primary.question.model]
        if self.confirm is not None:
            first.append(self.confirm.question.model)
        return first

    def _would_fire(self) -> bool:
        """Whether one more match would fire (so confirming it is worth a call)."""
        _, transitions = self.policy.step(self.state, True, self.clock.now_ms())
        return any(t.kind == Kind.FIRING for t in transitions)

    # -- recording -----------------------------------------------------------
    async def _finish(self, result: Evaluation, matched: bool | None,
                      live: Sequence[LiveStream | None], ids: list[str],
                      record: bool, trigger: Trigger = TICK) -> Evaluation:
        now = self.clock.now_ms()
        state, transitions = self.policy.step(self.state, matched, now)
        if record:
            self._remember(result, matched, now)
        result.state, result.transitions = state, transitions
        if not record or self.writer is None:
            return result
        state, transitions, silenced_by = await gate_step(
            self._labels(), self.state, state, transitions, store=self.store,
            silences=self.silences)
        result.state, result.transitions = state, transitions
        frames = live[0].frames if live and live[0] is not None else None
        events = [await self._events.make(
            t, result, frames, ids, prompt=self._prompt(trigger) or self.primary.question.prompt,
            first_match_ms=self.state.pending_since_ms, silenced_by=silenced_by.get(i),
            trigger=trigger.kind) for i, t in enumerate(transitions)]
        written: list[int] | None = []
        if state != self.state or events:
            try:
                fence = None if self.fence is None else self.fence(self.stream_names)
                written = await self.writer.write(
                    self.rule.name, self.stream_key, state, events,
                    [self._targets(e) for e in events], fence=fence)
            except LeaseLostError as exc:
                result.detail = f"not recorded: {exc}"
                log.info("rule %s: %s", self.rule.name, result.detail)
                return result
            result.event_ids = written or []
        previous, self.state = self.state, state  # pending or written: what will be stored
        for event in events:
            why = (f" (silenced by {event.silenced_by})" if event.silenced_by else
                   "" if event.notify else " (suppressed by cooldown)")
            log.info("alert %s on %s: %s%s (episode %d)%s", self.rule.name, self.stream_key,
                     event.kind, why, event.episode, "" if written is not None else
                     " (not recorded yet: the state store is unavailable)")
        if previous.status != state.status and state.status == Status.PENDING:
            log.info("alert %s on %s: pending", self.rule.name, self.stream_key)
        self.stats.events += len(events)
        stored = events if written is None else [
            replace(e, id=i) for e, i in zip(events, written, strict=False)]
        if written and self.on_stored is not None:
            self.on_stored([e for e in stored if e.id is not None])
        notify = [e for e in stored if e.notify]
        if state != previous or stored:
            for observe in self.observers:
                observe(self.rule.name, self.stream_key, state, stored)
        if notify and written is not None and self.on_recorded is not None:
            self.on_recorded()
        if notify and self.emit is not None:
            await self.emit(notify)
        return result

    def _labels(self) -> AlertLabels:
        return AlertLabels(self.rule.name, self.stream_key, self.rule.severity,
                           dict(self.rule.labels))

    def _remember(self, result: Evaluation, matched: bool | None, now_ms: int) -> None:
        answer = result.answer
        self.history.append({
            "at_ms": now_ms, "outcome": result.outcome, "matched": matched,
            "answer": answer.data if answer is not None and answer.valid else None,
            "latency_s": (round(answer.latency_s, 3)
                          if answer is not None and result.outcome != "unchanged" else None),
        })

    def _targets(self, event: AlertEventRecord) -> list[str]:
        if self.actions is None:
            return []
        return delivery_targets(self.rule.actions, event, self.actions)
