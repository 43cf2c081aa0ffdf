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
to :data:`~watcher.actions.sending.STORE_RETRY_MAX_S`, so a transient store
error never strands a row in ``delivering``.

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

The window and the options it comes from are in :mod:`watcher.actions.ratelimit`;
claiming, sending and marking one delivery or summary in :mod:`watcher.actions.sending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict

from watcher.actions.base import Action
from watcher.actions.ratelimit import max_age_ms, rate_limit
from watcher.actions.sending import ActionStats, Sender, Sleep, Worker
from watcher.clock import Clock
from watcher.store import AlertStore, DeliveryRecord, StoreError

log = logging.getLogger(__name__)

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
        self._wake = asyncio.Event()
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._workers = {name: Worker(name, action, rate_limit(action), max_age_ms(action))
                         for name, action in self.actions.items()}
        self._sender = Sender(
            store, clock, self.stats, sleep=sleep, rng=rng, attempt_timeout_s=attempt_timeout_s,
            claim_ms=round(((attempt_timeout_s or DEFAULT_CLAIM_S) + CLAIM_MARGIN_S) * 1000))

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
                        await self._sender.dead(d, f"unknown action {name!r} (not configured)")
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
    async def _work(self, worker: Worker) -> None:
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

    async def _run_batch(self, worker: Worker, batch: list[DeliveryRecord]) -> None:
        now = self.clock.now_ms()
        live: list[DeliveryRecord] = []
        for d in batch:
            if now - d.created_ms > worker.max_age_ms:
                last = f"; last error: {d.last_error}" if d.last_error else ""
                await self._sender.dead(d, f"expired: not delivered within max_age "
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
            await self._sender.summarize(worker, await self.store.summary_members(key), key)
        live = [d for d in live if d.summary_id is None]
        if limiter is not None:
            held = [d for d in live if limiter.held(d)]
            if len(held) > 1:
                if not self._take(worker, now):
                    return
                await self._sender.summarize(worker, held)
                summarized = {d.id for d in held}
                live = [d for d in live if d.id not in summarized]
        for d in live:
            if self._stopping or worker.paused_until_ms > self.clock.now_ms():
                return
            if limiter is not None and not self._take(worker, self.clock.now_ms()):
                return
            await self._sender.deliver(worker, d)

    def _take(self, worker: Worker, now_ms: int) -> bool:
        assert worker.limiter is not None
        if worker.limiter.take(now_ms):
            return True
        self.stats[worker.name].held += 1
        log.info("outbox: rate limit of %s reached; holding its deliveries for %.0f s",
                 worker.name, ((worker.limiter.opens_ms(now_ms) or now_ms) - now_ms) / 1000)
        return False
