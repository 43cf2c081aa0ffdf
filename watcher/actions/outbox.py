"""Durable, at-least-once delivery of stored alert events to their actions.

The rule runner stores each notifying event together with one ``pending``
delivery per action (:meth:`AlertStore.record`, one transaction), then calls
:meth:`Outbox.wake`. The outbox does the rest::

    dispatcher:  reset_in_flight (startup)  ->  loop:
                   due deliveries of actions that are idle, not rate limited, not paused
                   -> one batch per action, handed to that action's worker
                   -> sleep until the next one is due, a window reopens, or wake()
    worker (one task per action, one delivery in flight at a time):
                   expired (older than max_age)        -> dead
                   held by the rate limit, > 1 waiting -> ONE summary -> summarized
                   send(event, idempotency_key)        -> sent
                     DeliveryError(permanent)          -> dead at once
                     DeliveryError / timeout / bug     -> pending again after a backoff
                                                          (>= retry_after), or dead past max_age

A slow or failing action only ever delays its own worker: the dispatcher
never waits for a worker, and an action whose worker is busy is left out of
the next query. Nothing is dropped silently: every delivery ends ``sent``,
``summarized`` or ``dead`` (``watcher alerts --dead`` lists the dead letters).

At-least-once: a delivery is claimed (``delivering``) before the attempt and
marked ``sent`` after it, so a crash in between sends it again after the
restart (``reset_in_flight``); receivers dedupe on the idempotency key, which
is the same on every attempt. On a shared (PostgreSQL) store several outboxes
may run at once: each claim names its outbox's store instance and holds for
the attempt timeout plus :data:`CLAIM_MARGIN_S`, only one outbox wins a
claim, and a claim whose outbox died lapses so another sends it
(:mod:`watcher.store.deliveries`). A store write that fails after an attempt
(marking it sent, scheduling its retry) is retried in place with a backoff up
to :data:`STORE_RETRY_MAX_S`, so a transient store error never strands a row
in ``delivering``.

Rate limit (``rate_limit: {count, per}``): a sliding window of at most
``count`` messages (a summary counts as one) in any ``per`` seconds, kept in
memory (a restart starts with a full allowance). When it is full, the
action's deliveries are held: they stay ``pending``. When the window opens
again, the held ones (due before it reopened) go out as one summary if more
than one is waiting, or normally if only one is. A summary's members are
claimed with its key (``summary:ACTION:FIRST-LAST``) before it is sent; if its
outcome is unknown (a failure, a timeout, a crash) the same members go out
again as the same summary under the same key, never one by one under keys
the receiver could not match to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from watcher.actions.base import Action, DeliveryError
from watcher.backoff import Backoff
from watcher.clock import Clock
from watcher.duration import parse_duration
from watcher.store import AlertStore, DeliveryRecord, StoreError

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 2.0
RETRY_MAX_S = 600.0
RETRY_FACTOR = 2.0
RETRY_JITTER = 0.2
"""Retries wait 2 s, 4 s, 8 s ... up to 10 min, each +-20%, and at least ``retry_after``."""
DEFAULT_MAX_AGE_S = 86_400.0
BATCH_SIZE = 100
"""Due deliveries loaded per query (and so the most one summary stands for)."""
ATTEMPT_TIMEOUT_S = 120.0
"""A safety net over the channels' own timeouts: a hung attempt counts as failed."""
DEFAULT_CLAIM_S = 600.0
"""Claim length (before the margin) when attempts have no timeout."""
MAX_IDLE_S = 60.0
"""Longest sleep while something is pending (re-reads the clock at least this often)."""
ERROR_PAUSE_S = 5.0
"""How long an action rests after an unexpected error (a store error, a bug)."""
CLAIM_MARGIN_S = 60.0
"""A delivery claim outlasts the attempt timeout by this much, so it never lapses (and
lets another instance send it) while this one may still be sending."""
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


class SlidingWindow:
    """At most ``count`` messages in any ``per_ms``: a log of send times."""

    def __init__(self, count: int, per_ms: int) -> None:
        if count < 1 or per_ms <= 0:
            raise ValueError("rate limit needs count >= 1 and per > 0")
        self.count, self.per_ms = count, per_ms
        self._sent: deque[int] = deque()
        self.reopens_ms: int | None = None
        """When the window last became full, the time it reopened (or reopens):
        a delivery due before that was held."""

    def available(self, now_ms: int) -> int:
        while self._sent and self._sent[0] <= now_ms - self.per_ms:
            self._sent.popleft()
        return self.count - len(self._sent)

    def opens_ms(self, now_ms: int) -> int | None:
        """When the next message may go, if not now."""
        return None if self.available(now_ms) > 0 else self._sent[0] + self.per_ms

    def take(self, now_ms: int) -> bool:
        """Use one message of the allowance; False (nothing used) if none is left."""
        if self.available(now_ms) == 0:
            return False
        self._sent.append(now_ms)
        if self.available(now_ms) == 0:
            self.reopens_ms = self._sent[0] + self.per_ms
        return True

    def held(self, delivery: DeliveryRecord) -> bool:
        """Whether ``delivery`` was due while the window was full."""
        return self.reopens_ms is not None and delivery.next_attempt_ms < self.reopens_ms


@dataclass(eq=False, slots=True)
class _Worker:
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


class Outbox:
    """Delivers the store's pending deliveries to ``actions`` (name -> Action).

    ``sleep`` and ``rng`` (jitter) are injectable so tests never wait; the
    outbox does not close the actions (their owner does).
    """

    def __init__(self, store: AlertStore, actions: Mapping[str, Action], clock: Clock, *,
                 sleep: Sleep = asyncio.sleep, rng: Callable[[], float] = random.random,
                 batch_size: int = BATCH_SIZE,
                 attempt_timeout_s: float | None = ATTEMPT_TIMEOUT_S) -> None:
        self.store = store
        self.actions = dict(actions)
        self.clock = clock
        self.batch_size = batch_size
        self.attempt_timeout_s = attempt_timeout_s
        self.stats: dict[str, ActionStats] = {name: ActionStats() for name in self.actions}
        self._sleep = sleep
        self._rng = rng
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._workers = {name: _Worker(name, action, _rate_limit(action), _max_age_ms(action))
                         for name, action in self.actions.items()}
        self._claim_ms = round(((attempt_timeout_s or DEFAULT_CLAIM_S) + CLAIM_MARGIN_S) * 1000)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Start the dispatcher and one worker per action (in the running loop)."""
        if self._dispatcher is not None:
            raise RuntimeError("outbox already started")
        self._stopping = False
        for worker in self._workers.values():
            worker.idle.set()
            worker.task = asyncio.create_task(self._work(worker), name=f"outbox:{worker.name}")
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="outbox")

    def wake(self) -> None:
        """Look for due deliveries now (called when new ones are stored)."""
        self._wake.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop dispatching; let deliveries in flight finish for up to ``grace_s``.

        One still in flight then is cancelled and stays ``delivering``: the
        next start sends it again.
        """
        self._stopping = True
        tasks = [t for t in (self._dispatcher, *(w.task for w in self._workers.values()))
                 if t is not None]
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        busy = [w for w in self._workers.values() if w.busy]
        if busy and grace_s > 0:
            try:
                await asyncio.wait_for(asyncio.gather(*(w.idle.wait() for w in busy)), grace_s)
            except TimeoutError:
                log.warning("outbox: %d action(s) still delivering at shutdown", len(busy))
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatcher = None
        for worker in self._workers.values():
            worker.task, worker.busy = None, False
            worker.queue = asyncio.Queue(maxsize=1)  # a batch handed over but not begun

    async def status(self) -> dict[str, dict[str, int]]:
        """Per action: the counters since start, plus ``pending``, ``in_flight`` and
        ``dead_letters`` as stored now (for metrics and status pages)."""
        counts = await self.store.delivery_counts()
        out: dict[str, dict[str, int]] = {}
        for name in sorted(set(self.stats) | set(counts)):
            stored = counts.get(name, {})
            out[name] = {**asdict(self.stats.get(name, ActionStats())),
                         "pending": stored.get("pending", 0),
                         "in_flight": stored.get("delivering", 0),
                         "dead_letters": stored.get("dead", 0)}
        return out

    # -- the dispatcher ------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        recovered = False
        while not self._stopping:
            self._wake.clear()
            try:
                if not recovered:
                    reset = await self.store.reset_in_flight(self.clock.now_ms())
                    recovered = True
                    if reset:
                        log.warning("outbox: %d delivery(ies) were in flight at the last "
                                    "stop; delivering them again", reset)
                await self._dispatch_due()
                wait_s = await self._next_wait_s()
            except StoreError:  # said once by the store's health, not once per pass
                wait_s = ERROR_PAUSE_S
            except Exception:
                log.exception("outbox: dispatching failed; trying again in %.0f s",
                              ERROR_PAUSE_S)
                wait_s = ERROR_PAUSE_S
            await self._idle(wait_s)

    async def _dispatch_due(self) -> None:
        while True:
            now = self.clock.now_ms()
            due = await self.store.due_deliveries(now, self.batch_size,
                                                  exclude_actions=self._excluded(now))
            if not due:
                return
            batches: dict[str, list[DeliveryRecord]] = {}
            for d in due:
                batches.setdefault(d.action, []).append(d)
            for name, batch in batches.items():
                worker = self._workers.get(name)
                if worker is None:
                    for d in batch:
                        await self._dead(d, f"unknown action {name!r} (not configured)")
                    continue
                worker.busy = True
                worker.idle.clear()
                worker.queue.put_nowait(batch)

    def _excluded(self, now_ms: int) -> list[str]:
        """Actions not to load now: busy, paused, or with a full rate-limit window."""
        return [w.name for w in self._workers.values()
                if w.busy or w.paused_until_ms > now_ms
                or (w.limiter is not None and w.limiter.available(now_ms) == 0)]

    async def _next_wait_s(self) -> float | None:
        """Seconds until something may be due; None: nothing is, wait for wake()."""
        now = self.clock.now_ms()
        times = []
        due = await self.store.next_due_ms(self._excluded(now))
        if due is not None:
            times.append(due)
        for w in self._workers.values():
            if w.busy:
                continue  # it wakes the dispatcher when done
            if w.paused_until_ms > now:
                times.append(w.paused_until_ms)
            opens = w.limiter.opens_ms(now) if w.limiter is not None else None
            if opens is not None:
                times.append(opens)
        if not times:
            return None
        return min(MAX_IDLE_S, max(0.0, (min(times) - now) / 1000))

    async def _idle(self, wait_s: float | None) -> None:
        if self._wake.is_set():
            return
        if wait_s is None:
            await self._wake.wait()
            return
        if wait_s <= 0:
            await asyncio.sleep(0)
            return
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(wait_s))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    # -- the workers ---------------------------------------------------------
    async def _work(self, worker: _Worker) -> None:
        while True:
            batch = await worker.queue.get()
            try:
                await self._run_batch(worker, batch)
            except StoreError:  # said once by the store's health; the rows stay as they are
                worker.paused_until_ms = self.clock.now_ms() + round(ERROR_PAUSE_S * 1000)
            except Exception:
                log.exception("outbox: delivering to %s failed unexpectedly; pausing it %.0f s",
                              worker.name, ERROR_PAUSE_S)
                worker.paused_until_ms = self.clock.now_ms() + round(ERROR_PAUSE_S * 1000)
            finally:
                worker.busy = False
                worker.idle.set()
                self._wake.set()

    async def _run_batch(self, worker: _Worker, batch: list[DeliveryRecord]) -> None:
        now = self.clock.now_ms()
        live: list[DeliveryRecord] = []
        for d in batch:
            if now - d.created_ms > worker.max_age_ms:
                last = f"; last error: {d.last_error}" if d.last_error else ""
                await self._dead(d, f"expired: not delivered within max_age "
                                    f"({worker.max_age_ms / 1000:g} s){last}")
            else:
                live.append(d)
        limiter = worker.limiter
        unknown: dict[str, list[DeliveryRecord]] = {}
        for d in live:
            if d.summary_id is not None:
                unknown.setdefault(d.summary_id, []).append(d)
        for key in unknown:
            if self._stopping or (limiter is not None and not self._take(worker, now)):
                return
            await self._summarize(worker, await self.store.summary_members(key), key)
        live = [d for d in live if d.summary_id is None]
        if limiter is not None:
            held = [d for d in live if limiter.held(d)]
            if len(held) > 1:
                if not self._take(worker, now):
                    return
                await self._summarize(worker, held)
                summarized = {d.id for d in held}
                live = [d for d in live if d.id not in summarized]
        for d in live:
            if self._stopping or worker.paused_until_ms > self.clock.now_ms():
                return
            if limiter is not None and not self._take(worker, self.clock.now_ms()):
                return
            await self._deliver(worker, d)

    def _take(self, worker: _Worker, now_ms: int) -> bool:
        assert worker.limiter is not None
        if worker.limiter.take(now_ms):
            return True
        self.stats[worker.name].held += 1
        log.info("outbox: rate limit of %s reached; holding its deliveries for %.0f s",
                 worker.name, ((worker.limiter.opens_ms(now_ms) or now_ms) - now_ms) / 1000)
        return False

    async def _persist(self, what: str, write: Callable[[], Awaitable[Any]]) -> Any:
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

    async def _deliver(self, worker: _Worker, d: DeliveryRecord) -> None:
        now = self.clock.now_ms()
        event = await self.store.event(d.event_id)
        if event is None:
            await self._dead(d, f"event {d.event_id} is no longer stored")
            return
        if not await self._persist(
                f"the claim of event {d.event_id}",
                lambda: self.store.mark_delivering(d.id, now, claim_ms=self._claim_ms)):
            return
        attempt = d.attempts + 1
        error = await self._attempt(worker, worker.action.send(event, d.idempotency_key))
        if error is None:
            sent_ms = self.clock.now_ms()
            await self._persist(f"the delivery of event {d.event_id}",
                                lambda: self.store.mark_sent(d.id, sent_ms))
            self.stats[worker.name].sent += 1
            log.info("outbox: event %d delivered to %s (attempt %d)", d.event_id, worker.name,
                     attempt)
            return
        await self._failed(worker, [d], attempt, error, f"event {d.event_id}")

    async def _summarize(self, worker: _Worker, held: list[DeliveryRecord],
                         key: str | None = None) -> None:
        """Send ``held`` as one summary message: a new one, or (``key`` given) one
        sent before whose outcome is unknown, with the same members and key."""
        now = self.clock.now_ms()
        events = {e.id: e for e in await self.store.events_by_ids(d.event_id for d in held)}
        candidates: list[DeliveryRecord] = []
        for d in sorted(held, key=lambda d: d.event_id):
            if d.event_id not in events:
                await self._dead(d, f"event {d.event_id} is no longer stored")
            else:
                candidates.append(d)
        if not candidates:
            return
        if key is None:
            key = f"summary:{worker.name}:{candidates[0].event_id}-{candidates[-1].event_id}"
        members: list[DeliveryRecord] = []
        for d in candidates:
            claimed = await self._persist(
                f"the claim of event {d.event_id}",
                lambda d=d: self.store.mark_delivering(d.id, now, summary_id=key,
                                                       claim_ms=self._claim_ms))
            if claimed:
                members.append(d)
        if not members:
            return
        first, last = members[0].event_id, members[-1].event_id
        what = f"summary of events {first}-{last} ({len(members)})"
        attempt = max(d.attempts for d in members) + 1
        error = await self._attempt(
            worker, worker.action.send_summary([events[d.event_id] for d in members], key))
        if error is not None:
            await self._failed(worker, members, attempt, error, what)
            return
        done_ms = self.clock.now_ms()
        count = await self._persist(
            what, lambda: self.store.mark_summarized((d.id for d in members), key, done_ms))
        stats = self.stats[worker.name]
        stats.summaries += 1
        stats.summarized += count
        log.info("outbox: %s delivered to %s", what, worker.name)

    async def _attempt(self, worker: _Worker,
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

    async def _failed(self, worker: _Worker, ds: list[DeliveryRecord], attempt: int,
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
                await self._dead(d, error, quiet=True)
            return
        delay_s = retry_delay_s(attempt, self._rng, exc.retry_after)
        next_ms = now + round(delay_s * 1000)
        if exc.retry_after is not None:
            # The receiver asked the whole action to back off, not just this delivery.
            worker.paused_until_ms = max(worker.paused_until_ms, next_ms)
        expired = [d for d in ds if next_ms - d.created_ms > worker.max_age_ms]
        for d in expired:
            await self._dead(d, f"{error} (gave up after {attempt} attempt(s): max_age "
                                f"{worker.max_age_ms / 1000:g} s)", quiet=True)
        retry = [d for d in ds if d not in expired]
        for d in retry:
            await self._persist(f"the retry of event {d.event_id}",
                                lambda d=d: self.store.mark_retry(d.id, next_ms, error, now))
        if retry:
            stats.retries += len(retry)
            log.warning("outbox: %s to %s failed (attempt %d); retrying in %.0f s: %s", what,
                        worker.name, attempt, delay_s, shown)
        else:
            log.warning("outbox: %s to %s failed (attempt %d) and is dead: %s", what,
                        worker.name, attempt, shown)

    async def _dead(self, d: DeliveryRecord, error: str, *, quiet: bool = False) -> None:
        """Dead-letter ``d``; ``quiet`` when the caller logged the reason already."""
        now = self.clock.now_ms()
        await self._persist(f"the dead letter of event {d.event_id}",
                            lambda: self.store.mark_dead(d.id, error, now))
        self.stats.setdefault(d.action, ActionStats()).dead += 1
        if not quiet:
            log.warning("outbox: event %d to %s is dead: %s", d.event_id, d.action,
                        _short(error))


def _short(error: str, limit: int = 200) -> str:
    """An error as logged: one line, bounded (actions keep secrets out of errors)."""
    line = " ".join(error.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _option(options: Any, name: str) -> Any:
    if isinstance(options, Mapping):
        return options.get(name)
    return getattr(options, name, None)


def _rate_limit(action: Action) -> SlidingWindow | None:
    limit = _option(action.options, "rate_limit")
    if limit is None:
        return None
    count, per = _option(limit, "count"), _option(limit, "per")
    if not count or per is None:
        return None
    return SlidingWindow(int(count), round(parse_duration(per) * 1000))


def _max_age_ms(action: Action) -> int:
    value = _option(action.options, "max_age")
    return round((DEFAULT_MAX_AGE_S if value is None else parse_duration(value)) * 1000)
