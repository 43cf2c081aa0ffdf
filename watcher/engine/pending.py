"""Alert steps are written in order, and a store outage loses none of them.

A rule's step is its new :class:`AlertState` and the events of its
transitions (each notifying event with one outbox delivery per action). The
runner hands it to :meth:`StepWriter.write`::

    nothing pending  -> written at once (one transaction), as before
    StoreError       -> kept in memory, pending; a retry task starts
    something pending -> queued behind it: steps are written in the order they happened

The runner goes on with the new state either way, so its in-memory state is
what will be written. The retry task writes the oldest pending step with
backoff (0.5 s doubling to 10 s), then the rest in order; then the outbox
delivers them, with the same idempotency keys as ever (``event_key:action``).

Bounds, for an outage longer than a few seconds:

* A notifying step pending for ``max_age`` (default 60 s), or pushed past
  ``max_steps`` pending steps, is delivered *best effort*: each action gets
  each event directly (a few tries), marked ``persisted: false`` (the event
  has no id yet), with the key the outbox would use. Once the store is back
  the event is recorded, and only actions that did not get it have outbox
  deliveries, so nothing is sent twice.
* A pending step without events is dropped when a newer step of the same
  alert key arrives: only the newest state of a key matters.
* Past ``max_steps`` pending steps the oldest ones lose their evidence (in
  memory); past ``HARD_LIMIT_FACTOR`` times that, the oldest records, already
  delivered, are dropped, counted and logged: memory stays bounded.

When the store says it is full (``database or disk is full``), the oldest
stored evidence is dropped to make room (:meth:`AlertStore.drop_oldest_evidence`);
if even that fails, the pending step's own evidence goes: alert records come
before pictures. After each write that added evidence, stored evidence is
trimmed to ``evidence_budget_bytes``, oldest first.

A pending step is a :class:`~watcher.engine.steps.PendingStep`; best-effort
delivery is :mod:`watcher.engine.besteffort`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from watcher.backoff import Backoff
from watcher.clock import Clock, SystemClock
from watcher.engine.besteffort import Sender, Sleep, start_best_effort
from watcher.engine.state import AlertState
from watcher.engine.steps import PendingStep, WriterStats, evidence_size, strip_evidence
from watcher.engine.storehealth import StoreHealth
from watcher.errors import LeaseLostError
from watcher.store import AlertEventRecord, DuplicateEventError, FencedError, StoreError

log = logging.getLogger(__name__)

DEFAULT_MAX_STEPS = 1000
DEFAULT_MAX_AGE_S = 60.0
HARD_LIMIT_FACTOR = 10
RETRY_INITIAL_S, RETRY_MAX_S = 0.5, 10.0
FULL_DROP_FRACTION = 0.25
"""Share of the stored evidence dropped, oldest first, when the store is full."""


class StepWriter:
    """Writes alert steps in order; keeps them (bounded) while the store fails."""

    def __init__(self, store: Any, *, health: StoreHealth | None = None,
                 clock: Clock | None = None, actions: Mapping[str, Sender] | None = None,
                 max_steps: int = DEFAULT_MAX_STEPS, max_age_s: float = DEFAULT_MAX_AGE_S,
                 evidence_budget_bytes: int | None = None,
                 on_recorded: Callable[[], None] | None = None,
                 sleep: Sleep = asyncio.sleep, rng: Callable[[], float] = random.random,
                 ) -> None:
        if max_steps < 1 or max_age_s < 0:
            raise ValueError("max_steps must be >= 1 and max_age_s >= 0")
        self.store = store
        self.health = health or StoreHealth(clock)
        self.clock = clock or SystemClock()
        self.actions = actions
        """name -> action, for best-effort delivery (None: no best effort)."""
        self.max_steps = max_steps
        self.max_age_ms = round(max_age_s * 1000)
        self.evidence_budget_bytes = evidence_budget_bytes
        self.on_recorded = on_recorded
        self.stats = WriterStats()
        self._sleep = sleep
        self._rng = rng
        self._queue: deque[PendingStep] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._evidence_estimate: int | None = None
        self._in_flight = 0
        self.health.pending = lambda: self.pending

    @property
    def pending(self) -> int:
        """Steps not written yet: queued, or being written for the first time."""
        return len(self._queue) + self._in_flight

    async def write(self, rule: str, stream_key: str, state: AlertState,
                    events: list[AlertEventRecord], targets: list[list[str]], *,
                    fence: Any = None) -> list[int] | None:
        """Write one step now and return its event ids, or keep it pending and return None.

        Raises :class:`DuplicateEventError` (nothing written) like the store does, and
        :class:`~watcher.errors.LeaseLostError` / :class:`FencedError` when ``fence``
        (cluster mode) says this instance no longer owns the work: such a step is never
        kept, the new owner carries on.
        """
        if not self._queue:
            self._in_flight += 1
            try:
                ids = await self._record(rule, stream_key, state, events,
                                         lambda e: targets[events.index(e)], fence)
            except (DuplicateEventError, FencedError):
                self._in_flight -= 1
                raise
            except StoreError as exc:
                self._in_flight -= 1  # the queue holds it from here on
                self.health.failed(exc)
            except BaseException:
                self._in_flight -= 1
                raise
            else:
                self._in_flight -= 1
                self.health.wrote()  # back, unless other steps still wait
                await self._after_write(events)
                return ids
        self._enqueue(PendingStep(rule, stream_key, state, list(events),
                                  [list(t) for t in targets], self.clock.now_ms(),
                                  [set() for _ in events], fence=fence))
        return None

    async def close(self, grace_s: float = 5.0) -> None:
        """Try to write what is pending for up to ``grace_s``; say what could not be."""
        if self._flusher is not None and not self._flusher.done():
            self._kick.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._flusher), grace_s)
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        if self._queue:
            unsent = sum(1 for s in self._queue if s.notifying and not any(s.sent))
            log.error("state store unavailable at shutdown: %d alert step(s) not recorded "
                      "(%d with notifications never delivered)", len(self._queue), unsent)
        for step in self._queue:
            if step.delivering is not None:
                step.delivering.cancel()

    # -- the queue -----------------------------------------------------------
    def _enqueue(self, step: PendingStep) -> None:
        self.stats.queued += 1
        if not step.events:  # a newer state of this key makes older event-less ones moot
            self._queue = deque(s for s in self._queue
                                if s.events or s.writing or s.key != step.key)
        self._queue.append(step)
        self._enforce_bounds()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="alert-step-writer")
        self._kick.set()

    def _enforce_bounds(self) -> None:
        over = len(self._queue) - self.max_steps
        for step in list(self._queue)[:max(0, over)]:
            self._deliver_best_effort(step)
            strip_evidence(step)
        hard = self.max_steps * HARD_LIMIT_FACTOR
        while len(self._queue) > hard:
            step = self._queue.popleft()
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                log.error("state store unavailable too long: %d alert record(s) dropped "
                          "from memory (their notifications were sent best effort)",
                          self.stats.dropped)
            if step.delivering is None:
                self._deliver_best_effort(step)

    def _deliver_due(self) -> float | None:
        """Best-effort delivery of steps pending for ``max_age``; seconds to the next one."""
        now = self.clock.now_ms()
        nxt = None
        for step in self._queue:
            if not step.notifying or step.delivering is not None:
                continue
            left_ms = step.queued_ms + self.max_age_ms - now
            if left_ms <= 0:
                self._deliver_best_effort(step)
            elif nxt is None or left_ms < nxt:
                nxt = left_ms
        return None if nxt is None else nxt / 1000

    # -- writing -------------------------------------------------------------
    async def _flush(self) -> None:
        backoff = Backoff(RETRY_INITIAL_S, RETRY_MAX_S, rng=self._rng)
        full_tried = False
        while self._queue:
            self._enforce_bounds()
            next_due_s = self._deliver_due()
            step = self._queue[0]
            if step.delivering is not None and not step.delivering.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(step.delivering)  # never race it to an action
            owed = {e.event_key: step.remaining(e) for e in step.events}
            step.writing = True
            try:
                await self._record(step.rule, step.stream_key, step.state, step.events,
                                   lambda e, owed=owed: owed[e.event_key], step.fence)
            except DuplicateEventError:
                log.info("alert %s on %s: step already recorded", step.rule, step.stream_key)
            except (FencedError, LeaseLostError) as exc:
                log.info("alert %s on %s: step not recorded, this instance lost the work (%s)",
                         step.rule, step.stream_key, exc)
            except StoreError as exc:
                step.writing = False
                self.health.failed(exc)
                if _is_full(exc):
                    full_tried = await self._make_room(step, full_tried)
                wait_s = backoff.next()
                await self._pause(wait_s if next_due_s is None else min(wait_s, next_due_s))
                continue
            with contextlib.suppress(ValueError):
                self._queue.remove(step)  # by identity; newer steps may have joined meanwhile
            self.stats.recorded_late += 1
            backoff.reset()
            full_tried = False
            if not self._queue:
                self.health.wrote(flushed=True)
            await self._after_write(step.events)
            if any(owed.values()):
                self._wake_outbox()
        self.health.wrote(flushed=True)

    async def _record(self, rule: str, stream_key: str, state: AlertState,
                      events: list[AlertEventRecord],
                      actions_for: Callable[[AlertEventRecord], list[str]],
                      fence: Any = None) -> list[int]:
        fenced = {} if fence is None else {"fence": fence}
        return await self.store.record(rule, stream_key, state, events,
                                       actions_for=actions_for, **fenced)

    async def _pause(self, seconds: float) -> None:
        self._kick.clear()
        sleeper = asyncio.ensure_future(self._sleep(max(0.0, seconds)))
        kicked = asyncio.ensure_future(self._kick.wait())
        try:
            await asyncio.wait({sleeper, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            kicked.cancel()

    async def _make_room(self, step: PendingStep, tried: bool) -> bool:
        """The store is full: drop old stored evidence; if that failed before, this step's."""
        if not tried:
            try:
                dropped, left = await self.store.drop_oldest_evidence(FULL_DROP_FRACTION)
            except StoreError:
                pass
            else:
                self._evidence_estimate = left
                self.stats.evidence_dropped += dropped
                log.warning("state store full: dropped the evidence of %d oldest event(s) "
                            "(%d bytes of evidence left)", dropped, left)
                return True
        strip_evidence(step)
        return True

    async def _after_write(self, events: list[AlertEventRecord]) -> None:
        """Keep the stored evidence within the budget (checked when it may have grown)."""
        if self.evidence_budget_bytes is None:
            return
        added = sum(evidence_size(e) for e in events)
        if added == 0:
            return
        if self._evidence_estimate is not None:
            self._evidence_estimate += added
            if self._evidence_estimate <= self.evidence_budget_bytes:
                return
        try:
            dropped, left = await self.store.trim_evidence(self.evidence_budget_bytes)
        except StoreError as exc:
            self.health.failed(exc)
            return
        self._evidence_estimate = left
        if dropped:
            self.stats.evidence_dropped += dropped
            log.info("evidence budget (%d bytes): dropped the evidence of %d oldest event(s)",
                     self.evidence_budget_bytes, dropped)

    def _wake_outbox(self) -> None:
        if self.on_recorded is not None:
            self.on_recorded()

    def _deliver_best_effort(self, step: PendingStep) -> None:
        start_best_effort(step, self.actions, self.stats, self._sleep)


def _is_full(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text or "disk full" in text
