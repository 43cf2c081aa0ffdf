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

Who gets an event (:func:`delivery_targets`): ``firing`` and ``repeat`` go to
every action of the rule, ``resolved`` only to those with ``send_resolved``,
and events with ``notify=False`` (suppressed by cooldown) to none. Delivery
itself is the outbox's job (:mod:`watcher.actions.outbox`); ``emit`` is only
an in-process observer (tests, live views) and is never needed to deliver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import cv2

from watcher.actions.templates import compile_template
from watcher.clock import Clock
from watcher.engine.ask import Answer, ModelsExhausted, Question, StreamNotReady, ask
from watcher.engine.budget import RuleBudget
from watcher.engine.condition import Condition, ConditionError, default_condition
from watcher.engine.pending import StepWriter
from watcher.engine.rules import RuleConfig
from watcher.engine.schema import schema_fields
from watcher.engine.silences import AlertLabels, SilenceBook
from watcher.engine.state import AlertPolicy, AlertState, Kind, Status, Transition
from watcher.engine.store import AlertEventRecord, AlertStore, StoreError
from watcher.engine.triggers import TICK, Trigger
from watcher.errors import LeaseLostError, OvershootError
from watcher.media.changes import ChangeTracker
from watcher.media.tracks import LatestFrame
from watcher.overshoot.client import OvershootClient

log = logging.getLogger(__name__)

SNAPSHOT_QUALITY = 85
MAX_REUSE_S = 300.0
"""``skip_unchanged`` asks again at least this often, even if nothing changed."""
SAMPLES_KEPT = 1000
"""Latency samples kept between two metrics scrapes. Without a scraper (no status
listener) they are never read, so the buffer must stay small however long the run."""

Outcome = Literal["not_ready", "over_budget", "unchanged", "answered", "invalid",
                  "model_error", "condition_error"]
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


class LiveStream(Protocol):
    """What a rule needs of a kept stream (a :class:`~watcher.keeper.keeper.StreamKeeper`)."""

    stream_id: str | None
    frames: LatestFrame
    changes: ChangeTracker
    source_live: bool
    source_resumed_at: float | None


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


@dataclass(frozen=True, slots=True)
class _Ask:
    question: Question
    condition: Condition


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
        self.primary = _compile(rule.name, rule, default_model)
        self.confirm = (_compile(f"{rule.name}-confirm", rule.confirm, rule.model or default_model)
                        if rule.confirm is not None else None)
        self.policy = AlertPolicy(
            for_count=rule.for_count, for_ms=rule.for_ms,
            keep_firing_for_ms=_ms(rule.keep_firing_for) or 0,
            cooldown_ms=_ms(rule.cooldown) or 0,
            repeat_every_ms=_ms(rule.repeat_every))
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
    async def _ask(self, spec: _Ask, ids: list[str], result: Evaluation,
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

    def _verdict(self, spec: _Ask, answer: Answer | None, result: Evaluation) -> bool | None:
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
        state, transitions, silenced_by = await self._gate(state, transitions)
        result.state, result.transitions = state, transitions
        events = [await self._event(t, result, live, ids, trigger, silenced_by.get(i))
                  for i, t in enumerate(transitions)]
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

    async def _gate(self, state: AlertState, transitions: list[Transition],
                    ) -> tuple[AlertState, list[Transition], dict[int, str]]:
        """Apply acknowledgements and silences to a step's transitions.

        A ``repeat`` of an acknowledged episode is dropped (acks stop repeats until the
        alert resolves). A notifying transition that an active silence matches is kept
        but does not notify; a silenced firing leaves the episode un-notified, so its
        resolve is not sent either. Returns the state, the transitions and, by index,
        the silences that held them.
        """
        kept: list[Transition] = []
        silenced_by: dict[int, str] = {}
        for t in transitions:
            if t.kind is Kind.REPEAT and await self._acked(t.episode):
                continue
            silence = (self.silences.match(self._labels(), t.at_ms)
                       if t.notify and self.silences is not None else None)
            if silence is not None:
                if t.kind is Kind.FIRING:
                    state = replace(state, episode_notified=False)
                elif t.kind is Kind.REPEAT:
                    state = replace(state, episode_notified=self.state.episode_notified)
                silenced_by[len(kept)] = silence.id
                t = replace(t, notify=False)
            kept.append(t)
        return state, kept, silenced_by

    def _labels(self) -> AlertLabels:
        return AlertLabels(self.rule.name, self.stream_key, self.rule.severity,
                           dict(self.rule.labels))

    async def _acked(self, episode: int) -> bool:
        """Whether the episode is acknowledged (the store unreadable: not, so repeats go)."""
        if self.store is None:
            return False
        key = (self.rule.name, self.stream_key, episode)
        try:
            return key in await self.store.acks([key])
        except StoreError as exc:
            log.warning("rule %s: cannot read acknowledgements: %s", self.rule.name, exc)
            return False

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

    async def _event(self, transition: Transition, result: Evaluation,
                     live: Sequence[LiveStream | None], ids: list[str],
                     trigger: Trigger = TICK,
                     silenced_by: str | None = None) -> AlertEventRecord:
        answer = result.confirm if result.confirm is not None and result.confirm.valid else (
            result.answer)
        snapshot = await _snapshot(live[0].frames) if live and live[0] is not None else None
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
            extra={"streams": self.stream_names, "prompt": self._prompt(trigger)
                   or self.primary.question.prompt, "confirmed": result.confirmed,
                   "trigger": trigger.kind,
                   "confirm_answer": (result.confirm.data if result.confirm is not None
                                      else None),
                   "latency_s": (round(answer.latency_s, 3) if answer is not None else None),
                   "first_match_ms": (self.state.pending_since_ms
                                      if self.state.pending_since_ms is not None
                                      else transition.at_ms),
                   "window_ms": self.primary.question.window_ms,
                   **({"console_url": self.console_url} if self.console_url else {})},
        )

    async def _stream_time(self, stream_id: str) -> int | None:
        try:
            return (await self.client.get_stream(stream_id)).stream_time_ms
        except OvershootError:
            return None


async def _snapshot(frames: LatestFrame) -> bytes | None:
    """The frame being published right now, as JPEG."""
    frame = frames.get()
    if frame is None:
        return None

    def encode() -> bytes | None:
        image: Any = frame if not hasattr(frame, "to_ndarray") else frame.to_ndarray(
            format="bgr24")
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_QUALITY])
        return buf.tobytes() if ok else None

    return await asyncio.to_thread(encode)


def _compile(name: str, spec: Any, default_model: str) -> _Ask:
    fields = schema_fields(spec.schema)
    expr = spec.when or default_condition(fields)
    if expr is None:
        raise ValueError(f"rule {name}: no condition")
    question = Question(
        prompt=spec.prompt, schema=spec.schema, model=spec.model or default_model,
        fallback_models=tuple(getattr(spec, "fallback_models", ()) or ()),
        window_ms=_ms(spec.window), max_fps=spec.max_fps,
        max_tokens=getattr(spec, "max_tokens", None) or 300,
        schema_name=_schema_name(name))
    return _Ask(question, Condition(expr, fields))


def _schema_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "answer"


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)
