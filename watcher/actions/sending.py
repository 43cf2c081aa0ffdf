"""Sending to one action: claim a delivery, send it (or a summary), and mark how it went.

``send(event, idempotency_key)`` -> ``sent``; a permanent failure -> ``dead`` at once;
any other failure (a timeout, a bug) -> ``pending`` again after a backoff (at least the
receiver's ``retry_after``, which also pauses the whole action), or ``dead`` past the
action's ``max_age``. Every store write after a claim is retried in place until it
succeeds (:meth:`Sender.persist`), so no row is left ``delivering``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from watcher.actions.base import Action, DeliveryError
from watcher.actions.ratelimit import SlidingWindow
from watcher.backoff import Backoff
from watcher.clock import Clock
from watcher.store import AlertStore, DeliveryRecord

log = logging.getLogger("watcher.actions.outbox")
"""The outbox's logger: these lines are the outbox's own (``outbox: ...``)."""

RETRY_INITIAL_S = 2.0
RETRY_MAX_S = 600.0
RETRY_FACTOR = 2.0
RETRY_JITTER = 0.2
"""Retries wait 2 s, 4 s, 8 s ... up to 10 min, each +-20%, and at least ``retry_after``."""
STORE_RETRY_INITIAL_S = 0.5
STORE_RETRY_MAX_S = 30.0
"""A failed store write after a claim is retried after 0.5 s, 1 s, 2 s ... at most 30 s apart."""

Sleep = Callable[[float], Awaitable[Any]]


def retry_delay_s(attempts: int, rng: Callable[[], float] = random.random,
                  retry_after: float | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
    backoff = Backoff(initial=RETRY_INITIAL_S, maximum=RETRY_MAX_S, factor=RETRY_FACTOR,
                      jitter=RETRY_JITTER, rng=rng, attempts=max(0, attempts - 1))
    return max(backoff.next(), retry_after or 0.0)


@dataclass(slots=True)
class ActionStats:
    """Counters of one action since the outbox started."""

    sent: int = 0
    """Deliveries sent one by one."""
    failed: int = 0
    """Failed attempts (of a delivery or a summary)."""
    retries: int = 0
    """Failed deliveries scheduled for another attempt."""
    dead: int = 0
    """Deliveries dead-lettered."""
    summaries: int = 0
    """Summary messages sent."""
    summarized: int = 0
    """Deliveries those summaries stood for."""
    held: int = 0
    """Times the rate-limit window filled with deliveries still waiting (they are held)."""


@dataclass(eq=False, slots=True)
class Worker:
    """One action as the outbox runs it: a queue of batches, one in flight at a time."""

    name: str
    action: Action
    limiter: SlidingWindow | None
    max_age_ms: int
    queue: asyncio.Queue[list[DeliveryRecord]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1))
    busy: bool = False
    paused_until_ms: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Sender:
    """Claims, sends and marks deliveries for the outbox's workers.

    ``stats`` (action name -> counters) is shared with the outbox; ``attempt_timeout_s``
    bounds one send, ``claim_ms`` how long a claim holds.
    """

    def __init__(self, store: AlertStore, clock: Clock, stats: dict[str, ActionStats], *,
                 sleep: Sleep, rng: Callable[[], float], attempt_timeout_s: float | None,
                 claim_ms: int) -> None:
        self.store = store
        self.clock = clock
        self.stats = stats
        self.attempt_timeout_s = attempt_timeout_s
        self.claim_ms = claim_ms
        self._sleep = sleep
        self._rng = rng

    async def persist(self, what: str, write: Callable[[], Awaitable[Any]]) -> Any:
        """Run a store write until it succeeds, backing off between tries.

        Used for every write that follows a claim: giving up would leave the
        row ``delivering`` (nobody's) until the next restart.
        """
        backoff = Backoff(initial=STORE_RETRY_INITIAL_S, maximum=STORE_RETRY_MAX_S,
                          factor=2.0, jitter=0.0)
        while True:
            try:
                return await write()
            except Exception as exc:
                delay_s = backoff.next()
                log.warning("outbox: storing %s failed (%s); trying again in %.1f s", what,
                            type(exc).__name__, delay_s)
                await self._sleep(delay_s)

    async def deliver(self, worker: Worker, d: DeliveryRecord) -> None:
        now = self.clock.now_ms()
        event = await self.store.event(d.event_id)
        if event is None:
            await self.dead(d, f"event {d.event_id} is no longer stored")
            return
        if not await self.persist(
                f"the claim of event {d.event_id}",
                lambda: self.store.mark_delivering(d.id, now, claim_ms=self.claim_ms)):
            return
        attempt = d.attempts + 1
        error = await self.attempt(worker, worker.action.send(event, d.idempotency_key))
        if error is None:
            sent_ms = self.clock.now_ms()
            await self.persist(f"the delivery of event {d.event_id}",
                               lambda: self.store.mark_sent(d.id, sent_ms))
            self.stats[worker.name].sent += 1
            log.info("outbox: event %d delivered to %s (attempt %d)", d.event_id, worker.name,
                     attempt)
            return
        await self.failed(worker, [d], attempt, error, f"event {d.event_id}")

    async def summarize(self, worker: Worker, held: list[DeliveryRecord],
                        key: str | None = None) -> None:
        """Send ``held`` as one summary message: a new one, or (``key`` given) one
        sent before whose outcome is unknown, with the same members and key."""
        now = self.clock.now_ms()
        events = {e.id: e for e in await self.store.events_by_ids(d.event_id for d in held)}
        candidates: list[DeliveryRecord] = []
        for d in sorted(held, key=lambda d: d.event_id):
            if d.event_id not in events:
                await self.dead(d, f"event {d.event_id} is no longer stored")
            else:
                candidates.append(d)
        if not candidates:
            return
        if key is None:
            key = f"summary:{worker.name}:{candidates[0].event_id}-{candidates[-1].event_id}"
        members: list[DeliveryRecord] = []
        for d in candidates:
            claimed = await self.persist(
                f"the claim of event {d.event_id}",
                lambda d=d: self.store.mark_delivering(d.id, now, summary_id=key,
                                                       claim_ms=self.claim_ms))
            if claimed:
                members.append(d)
        if not members:
            return
        first, last = members[0].event_id, members[-1].event_id
        what = f"summary of events {first}-{last} ({len(members)})"
        attempt = max(d.attempts for d in members) + 1
        error = await self.attempt(
            worker, worker.action.send_summary([events[d.event_id] for d in members], key))
        if error is not None:
            await self.failed(worker, members, attempt, error, what)
            return
        done_ms = self.clock.now_ms()
        count = await self.persist(
            what, lambda: self.store.mark_summarized((d.id for d in members), key, done_ms))
        stats = self.stats[worker.name]
        stats.summaries += 1
        stats.summarized += count
        log.info("outbox: %s delivered to %s", what, worker.name)

    async def attempt(self, worker: Worker,
                      send: Coroutine[Any, Any, None]) -> DeliveryError | None:
        """Run one send; the failure as a DeliveryError, or None if it worked."""
        try:
            async with asyncio.timeout(self.attempt_timeout_s):
                await send
        except DeliveryError as exc:
            return exc
        except TimeoutError:
            return DeliveryError(f"timed out after {self.attempt_timeout_s:g} s")
        except Exception as exc:
            # A bug in the action; its message may hold what the action keeps secret.
            log.error("outbox: action %s raised %s (a bug: actions raise DeliveryError)",
                      worker.name, type(exc).__name__)
            log.debug("outbox: action %s traceback", worker.name, exc_info=True)
            return DeliveryError(f"unexpected {type(exc).__name__} in the action")
        return None

    async def failed(self, worker: Worker, ds: list[DeliveryRecord], attempt: int,
                     exc: DeliveryError, what: str) -> None:
        now = self.clock.now_ms()
        stats = self.stats[worker.name]
        stats.failed += 1
        error = str(exc) or type(exc).__name__
        shown = _short(error)
        if exc.permanent:
            log.warning("outbox: %s to %s failed permanently (attempt %d): %s", what,
                        worker.name, attempt, shown)
            for d in ds:
                await self.dead(d, error, quiet=True)
            return
        delay_s = retry_delay_s(attempt, self._rng, exc.retry_after)
        next_ms = now + round(delay_s * 1000)
        if exc.retry_after is not None:
            # The receiver asked the whole action to back off, not just this delivery.
            worker.paused_until_ms = max(worker.paused_until_ms, next_ms)
        expired = [d for d in ds if next_ms - d.created_ms > worker.max_age_ms]
        for d in expired:
            await self.dead(d, f"{error} (gave up after {attempt} attempt(s): max_age "
                               f"{worker.max_age_ms / 1000:g} s)", quiet=True)
        retry = [d for d in ds if d not in expired]
        for d in retry:
            await self.persist(f"the retry of event {d.event_id}",
                               lambda d=d: self.store.mark_retry(d.id, next_ms, error, now))
        if retry:
            stats.retries += len(retry)
            log.warning("outbox: %s to %s failed (attempt %d); retrying in %.0f s: %s", what,
                        worker.name, attempt, delay_s, shown)
        else:
            log.warning("outbox: %s to %s failed (attempt %d) and is dead: %s", what,
                        worker.name, attempt, shown)

    async def dead(self, d: DeliveryRecord, error: str, *, quiet: bool = False) -> None:
        """Dead-letter ``d``; ``quiet`` when the caller logged the reason already."""
        now = self.clock.now_ms()
        await self.persist(f"the dead letter of event {d.event_id}",
                           lambda: self.store.mark_dead(d.id, error, now))
        self.stats.setdefault(d.action, ActionStats()).dead += 1
        if not quiet:
            log.warning("outbox: event %d to %s is dead: %s", d.event_id, d.action,
                        _short(error))


def _short(error: str, limit: int = 200) -> str:
    """An error as logged: one line, bounded (actions keep secrets out of errors)."""
    line = " ".join(error.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"

