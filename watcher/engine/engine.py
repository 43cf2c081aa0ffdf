"""The rule engine: one APScheduler job per rule, each running its RuleRunner.

Jobs coalesce (a backlog of missed ticks runs once), never overlap
(``max_instances=1``), and are dropped when later than the misfire grace.
Interval rules start spread over their first interval (a stable offset per
rule name) so that hundreds of rules do not tick in the same millisecond.
Lateness (start of a run minus its scheduled time), misses and overruns are
recorded per rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from watcher.clock import Clock, SystemClock
from watcher.engine.alertevents import Deliverable
from watcher.engine.budget import BudgetConfig, BudgetGuard, SpendRow
from watcher.engine.evaluation import SAMPLES_KEPT
from watcher.engine.pending import StepWriter
from watcher.engine.rules import RuleConfig
from watcher.engine.runner import (
    Emit,
    FenceFor,
    LiveStream,
    OnRecorded,
    OnStored,
    RuleRunner,
    StepObserver,
)
from watcher.engine.silences import SilenceBook
from watcher.engine.store import AlertEventRecord, AlertStore, StoreError
from watcher.engine.triggered import TriggeredRules
from watcher.overshoot.client import OvershootClient

log = logging.getLogger(__name__)

START_MARGIN_S = 0.5
ERROR_REPORT_INTERVAL_S = 300.0
"""A rule failing the same way is logged at most this often (counted every time)."""
OVERRUN_REPORT_INTERVAL_S = 300.0
"""A rule whose runs outlast its interval is reported at most this often (it is counted
in ``watcher_rule_overrun_ticks_total`` every time)."""


class _QuietOverruns(logging.Filter):
    """Drops APScheduler's warning for each tick skipped because the last run is still
    going: with a slow model that is every tick, for months. The engine reports it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in str(record.msg)


_QUIET_OVERRUNS = _QuietOverruns()


@dataclass(slots=True)
class TickStats:
    lateness_s: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))
    missed: int = 0
    overruns: int = 0
    errors: int = 0
    overruns_reported: int = 0
    overrun_reported_s: float = float("-inf")
    error_kind: str | None = None
    error_reported_s: float = float("-inf")


class RuleEngine:
    def __init__(
        self,
        rules: list[RuleConfig],
        *,
        client: OvershootClient,
        streams: Mapping[str, LiveStream],
        store: AlertStore,
        default_model: str,
        emit: Emit | None = None,
        clock: Clock | None = None,
        misfire_grace_s: float | None = None,
        actions: Mapping[str, Deliverable] | None = None,
        on_recorded: OnRecorded | None = None,
        fence: FenceFor | None = None,
        writer: StepWriter | None = None,
        model_budgets: Mapping[str, BudgetConfig] | None = None,
        silences: SilenceBook | None = None,
        on_stored: OnStored | None = None,
        console_url: str | None = None,
    ) -> None:
        """``actions`` (name -> action) makes every notifying event get an outbox
        delivery per action it goes to (see :func:`~watcher.engine.alertevents.delivery_targets`);
        ``on_recorded`` (the outbox's ``wake``) is called once such a step is stored;
        ``fence`` (cluster mode) guards every rule's writes. ``writer`` writes every
        runner's steps in order (one is made for ``store`` if not given): it keeps them
        while the store fails. ``model_budgets`` (``overshoot.budgets``) cap what every
        rule may ask of a model."""
        self.client = client
        self.streams = streams
        self.store = store
        self.default_model = default_model
        self.emit = emit
        self.actions = actions
        self.on_recorded = on_recorded
        self.fence = fence
        self.silences = silences
        self.on_stored = on_stored
        self.console_url = console_url
        self.clock = clock or SystemClock()
        self.writer = writer or StepWriter(store, clock=self.clock, on_recorded=on_recorded)
        self.misfire_grace_s = misfire_grace_s
        self.rules = {r.name: r for r in rules if r.enabled}
        self.budgets = BudgetGuard(model_budgets, send=self._send_notice,
                                   save=self._save_spend)
        """Spend against the rules' and models' budgets."""
        self.runners: dict[str, RuleRunner] = {}
        self.ticks: dict[str, TickStats] = {}
        self.observers: list[StepObserver] = []
        """Called after every step that changed an alert (live views, Home Assistant)."""
        self.paused: set[str] = set()
        """Rules switched off at run time: kept, with their alert state, but not asked."""
        self.triggers = TriggeredRules(self)
        """``on_change`` and ``on_alert``: asks besides the schedule."""
        self.observers.append(self.triggers.on_step)
        self._scheduler: AsyncIOScheduler | None = None

    async def start(self) -> None:
        """Load the alert states and start ticking."""
        states = await self.store.load_all_states()
        if self.budgets.models or any(r.budget is not None for r in self.rules.values()):
            try:
                self.budgets.restore(await self.store.load_budget_spend(),
                                     self.clock.now_ms())
            except StoreError as exc:
                log.warning("budgets start from zero: cannot read their spend (%s)", exc)
        for rule in self.rules.values():
            runner = self._runner(rule)
            runner.state = states.get((rule.name, runner.stream_key), runner.state)
            self.runners[rule.name] = runner
            self.ticks[rule.name] = TickStats()
        scheduler = self._scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler_log = logging.getLogger("apscheduler.scheduler")
        if _QUIET_OVERRUNS not in scheduler_log.filters:
            scheduler_log.addFilter(_QUIET_OVERRUNS)
        scheduler.add_listener(self._on_job_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED
                               | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        for rule in self.rules.values():
            self._schedule(rule)
        scheduler.start()
        self.triggers.arm()
        log.info("rule engine started with %d rule(s)", len(self.runners))

    async def apply(self, rules: list[RuleConfig], *,
                    retire_wait_s: float | None = None) -> list[str]:
        """Switch to ``rules`` while running; return what changed, one line each.

        Unchanged rules keep their runner and schedule. A changed rule gets a
        new runner that inherits the alert state (when it asks about the same
        streams) and the counters; a removed rule's state stays in the store.
        An added rule's state is loaded from the store before its first tick.
        ``retire_wait_s`` bounds the wait for a removed rule's evaluation in
        flight (cluster mode: its writes are fenced off anyway).
        """
        new = {r.name: r for r in rules if r.enabled}
        changes: list[str] = []
        for name in [n for n in self.runners if n not in new]:
            await self._retire(name, retire_wait_s)
            del self.runners[name], self.ticks[name]
            changes.append(f"rule {name} removed")
        for name, rule in new.items():
            old = self.runners.get(name)
            if old is not None and _same(old.rule, rule):
                continue
            runner = self._runner(rule)
            if old is not None:
                await self._retire(name)
                if old.stream_key == runner.stream_key:
                    runner.state = old.state
                runner.stats = old.stats
                changes.append(f"rule {name} changed")
            else:
                try:
                    state = await self.store.load_state(name, runner.stream_key)
                except StoreError as exc:  # a new rule: start quiet rather than not at all
                    log.warning("rule %s: cannot read its stored alert state (%s); starting "
                                "from inactive", name, exc)
                    state = None
                runner.state = state or runner.state
                self.ticks[name] = TickStats()
                changes.append(f"rule {name} added")
            self.runners[name] = runner
            self._schedule(rule)
        self.rules = new
        self.budgets.forget(new)
        if self._scheduler is not None:
            self.triggers.arm()
        return changes

    def _runner(self, rule: RuleConfig) -> RuleRunner:
        runner = RuleRunner(rule, default_model=self.default_model, client=self.client,
                            streams=self.streams, store=self.store, clock=self.clock,
                            emit=self.emit, actions=self.actions,
                            on_recorded=self.on_recorded, fence=self.fence,
                            writer=self.writer, silences=self.silences,
                            on_stored=self.on_stored, console_url=self.console_url)
        runner.observers = self.observers
        runner.budget = self.budgets.for_rule(rule.name, rule.budget,
                                              runner.models_asked_first())
        return runner

    async def _save_spend(self, rows: list[SpendRow]) -> None:
        await self.store.save_budget_spend(rows)

    async def _send_notice(self, action: str, notice: AlertEventRecord, key: str) -> None:
        """Send a budget notice straight to ``action`` (see :mod:`watcher.engine.budget`)."""
        target = (self.actions or {}).get(action)
        send = getattr(target, "send", None)
        if send is None:
            raise LookupError(f"no action {action!r} configured")
        await send(notice, key)

    def budget_status(self) -> list[dict[str, Any]]:
        """Spend against every budget, now (``/status``, ``/metrics``)."""
        return self.budgets.snapshot(self.clock.now_ms())

    def is_enabled(self, name: str) -> bool:
        """Whether ``name`` is configured, enabled and not switched off at run time."""
        return name in self.rules and name not in self.paused

    def set_enabled(self, name: str, enabled: bool) -> bool:
        """Switch a configured rule on or off at run time; False if there is no such rule.

        Off, its ticks stop (an evaluation in flight finishes) and its alert state
        stays as it is; on, it ticks again from its next scheduled time."""
        if name not in self.rules:
            return False
        if enabled:
            self.paused.discard(name)
        else:
            self.paused.add(name)
        job = self._scheduler.get_job(name) if self._scheduler is not None else None
        if job is not None:
            if enabled:
                job.resume()
            else:
                job.pause()
        return True

    def _schedule(self, rule: RuleConfig) -> None:
        assert self._scheduler is not None
        job = self._scheduler.add_job(
            self._tick, trigger=self._trigger(rule), args=[rule.name], id=rule.name,
            name=rule.name, coalesce=True, max_instances=1,
            misfire_grace_time=self._grace(rule), replace_existing=True)
        if rule.name in self.paused:
            job.pause()

    async def _retire(self, name: str, wait_s: float | None = None) -> None:
        """Unschedule a rule and wait for its evaluation in flight, if any (at most
        ``wait_s``)."""
        if self._scheduler is not None and self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s), self.runners[name]._lock:
                pass

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop ticking; let evaluations in flight finish for up to ``grace_s``, then try
        to write what is still pending (for up to ``grace_s`` more).

        The scheduler is paused first and shut down only afterwards, because
        its shutdown cancels the jobs still running.
        """
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running:
            await self.writer.close(grace_s)
            return
        await self.triggers.aclose()
        scheduler.pause()
        busy = [r._lock for r in self.runners.values() if r._lock.locked()]

        async def drained() -> None:
            for lock in busy:
                async with lock:
                    pass

        try:
            await asyncio.wait_for(drained(), grace_s)
        except TimeoutError:
            log.warning("%d evaluation(s) still running at shutdown; cancelling them",
                        sum(lock.locked() for lock in busy))
        scheduler.shutdown(wait=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.budgets.drain(), grace_s)
        await self.writer.close(grace_s)

    async def _tick(self, name: str) -> None:
        """One scheduled run. Its errors stop here: APScheduler never sees them (it would
        log a traceback per tick); each kind is logged once, then every 5 min."""
        runner = self.runners.get(name)
        if runner is None or name in self.paused:
            return
        try:
            await runner.evaluate()
        except Exception as exc:
            stats = self.ticks.get(name)
            if stats is None:
                return
            stats.errors += 1
            now = time.monotonic()
            kind = type(exc).__name__
            if kind != stats.error_kind or now - stats.error_reported_s >= ERROR_REPORT_INTERVAL_S:
                log.error("rule %s failed (%d time(s) so far): %s: %s", name, stats.errors,
                          kind, exc)
                log.debug("rule %s traceback", name, exc_info=True)
                stats.error_kind, stats.error_reported_s = kind, now

    # -- scheduling ----------------------------------------------------------
    def _trigger(self, rule: RuleConfig) -> BaseTrigger:
        jitter = rule.jitter or None
        if rule.cron is not None:
            trigger = CronTrigger.from_crontab(rule.cron, timezone=UTC)
            trigger.jitter = jitter
            return trigger
        assert rule.every is not None
        # A stable offset spreads rules over their interval; the margin keeps the first
        # tick after the scheduler has started (an earlier one would be lost silently).
        offset = START_MARGIN_S + _stable_fraction(rule.name) * rule.every
        start = datetime.now(UTC) + timedelta(seconds=offset)
        return IntervalTrigger(seconds=rule.every, start_date=start, timezone=UTC,
                               jitter=jitter)

    def _grace(self, rule: RuleConfig) -> int:
        if self.misfire_grace_s is not None:
            return max(1, round(self.misfire_grace_s))
        return max(1, round(rule.every / 2)) if rule.every else 30

    def _on_job_event(self, event: JobEvent) -> None:
        stats = self.ticks.get(event.job_id)
        if stats is None:
            return
        # A refused submission (the last run still going) is a JobSubmissionEvent too.
        if event.code == EVENT_JOB_SUBMITTED and isinstance(event, JobSubmissionEvent):
            scheduled = event.scheduled_run_times[-1]
            stats.lateness_s.append((datetime.now(UTC) - scheduled).total_seconds())
            stats.missed += len(event.scheduled_run_times) - 1
        elif event.code == EVENT_JOB_MISSED:
            stats.missed += 1
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            stats.overruns += 1
            now = time.monotonic()
            if now - stats.overrun_reported_s >= OVERRUN_REPORT_INTERVAL_S:
                log.warning("rule %s: still running at its next tick; %d tick(s) skipped "
                            "(its model answers or timeout take longer than its interval)",
                            event.job_id, stats.overruns - stats.overruns_reported)
                stats.overrun_reported_s, stats.overruns_reported = now, stats.overruns
        elif isinstance(event, JobExecutionEvent) and event.exception is not None:
            stats.errors += 1
            log.error("rule %s failed: %r", event.job_id, event.exception)


def _same(a: RuleConfig, b: RuleConfig) -> bool:
    """Equal as configured (where in which file they were written does not matter)."""
    return a.model_dump(by_alias=True) == b.model_dump(by_alias=True)


def _stable_fraction(name: str) -> float:
    """A number in [0, 1) that depends only on ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") / 2**32
