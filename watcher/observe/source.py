"""What the status listener and the metrics read: the daemon's live objects, and readiness.

The daemon builds one :class:`StatusSource` from what it runs (keepers, rule
engine, outbox, alert store) and hands it to
:func:`watcher.observe.server.status_listener`. Everything is read when asked
(a scrape, a request), never copied ahead of time, and only through the small
protocols below, so tests can pass real objects or tiny stand-ins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from watcher.clock import Clock, SystemClock
from watcher.cluster.observe import ClusterView
from watcher.engine.engine import TickStats
from watcher.engine.evaluation import RuleStats
from watcher.engine.state import AlertState
from watcher.engine.store import AlertEventRecord
from watcher.keeper.health import StreamHealth
from watcher.observe.readiness import ReadinessReport, StreamReadiness, stream_readiness

log = logging.getLogger(__name__)

ACTION_COUNTERS = ("sent", "failed", "retries", "dead", "summaries", "summarized", "held")
"""Per action, counts since the outbox started (:class:`~watcher.actions.sending.ActionStats`)."""
ACTION_STORED = ("pending", "in_flight", "dead_letters")
"""Per action, deliveries in the store now, by state (``Outbox.status()``)."""
ACTION_FIELDS = ACTION_COUNTERS + ACTION_STORED


class KeptStream(Protocol):
    """A stream keeper (:class:`~watcher.keeper.keeper.StreamKeeper`); it may also have
    ``async check_now()`` (read the stream's status now, for /readyz)."""

    def health(self) -> StreamHealth: ...


class StoreState(Protocol):
    """The state store's health (:class:`~watcher.engine.storehealth.StoreHealth`)."""

    errors_total: int

    @property
    def reason(self) -> str | None: ...


class Runner(Protocol):
    """A rule's runner (:class:`~watcher.engine.runner.RuleRunner`)."""

    rule: Any
    stream_names: list[str]
    state: AlertState
    stats: RuleStats


class Engine(Protocol):
    """The rule engine (:class:`~watcher.engine.engine.RuleEngine`)."""

    runners: Mapping[str, Runner]
    ticks: Mapping[str, TickStats]


class Outbox(Protocol):
    """The delivery outbox (:class:`~watcher.actions.outbox.Outbox`).

    ``stats``: per action, the :data:`ACTION_COUNTERS` kept in memory (read at
    every scrape); ``status()``: those plus the :data:`ACTION_STORED` counts,
    which need the store (read by :meth:`StatusSource.refresh`).
    """

    @property
    def stats(self) -> Mapping[str, Any]: ...

    async def status(self) -> Mapping[str, Mapping[str, int]]: ...


class EventSource(Protocol):
    """The alert store (:class:`~watcher.engine.store.AlertStore`)."""

    async def events(self, limit: int = 50, *, snapshots: bool = True,
                     ) -> list[AlertEventRecord]: ...


@dataclass(slots=True)
class StatusSource:
    """The live objects behind /status, /readyz and /metrics.

    ``keepers`` is read at every request, so the daemon's dict may fill later;
    ``engine``, ``outbox`` and ``store`` may be None (or set later) until they exist.
    """

    keepers: Mapping[str, KeptStream]
    engine: Engine | None = None
    outbox: Outbox | None = None
    store: EventSource | None = None
    max_frame_age_s: float | None = None
    """How old a stream's newest frame may be; None: a few frame intervals."""
    store_health: StoreState | None = None
    cluster: ClusterView | None = None
    """Cluster mode: the coordinator (its ``snapshot()``); None for a single daemon."""
    clock: Clock = field(default_factory=SystemClock)
    started_ms: int = field(default=0)
    _started_monotonic: float = field(default_factory=time.monotonic, init=False, repr=False)
    _stored_actions: dict[str, dict[str, int]] = field(default_factory=dict, init=False,
                                                       repr=False)

    def __post_init__(self) -> None:
        if not self.started_ms:
            self.started_ms = self.clock.now_ms()

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started_monotonic

    def healths(self) -> list[StreamHealth]:
        return [keeper.health() for keeper in list(self.keepers.values())]

    def runners(self) -> dict[str, Runner]:
        return dict(self.engine.runners) if self.engine is not None else {}

    def budgets(self) -> list[dict[str, Any]]:
        """Spend against each rule's and model's budget (none without an engine)."""
        read = getattr(self.engine, "budget_status", None)
        return read() if read is not None else []

    def ticks(self) -> dict[str, TickStats]:
        return dict(self.engine.ticks) if self.engine is not None else {}

    async def refresh(self) -> None:
        """Read what needs I/O (the outbox's stored delivery counts) for :meth:`action_stats`.

        Called before each /metrics and /status answer; on an error the last
        counts are kept (and the error logged).
        """
        if self.outbox is None:
            return
        try:
            status = await self.outbox.status()
        except Exception as exc:
            log.warning("status: cannot read the outbox's delivery counts: %s", exc)
            return
        self._stored_actions = {name: _counts(counts) for name, counts in status.items()}

    def action_stats(self) -> dict[str, dict[str, int]]:
        """Per action: the :data:`ACTION_FIELDS` the outbox keeps (counters as of now, stored
        counts as of the last :meth:`refresh`)."""
        if self.outbox is None:
            return {}
        live = {name: _counts(value) for name, value in dict(self.outbox.stats).items()}
        names = sorted(set(live) | set(self._stored_actions))
        return {name: {**self._stored_actions.get(name, {}), **live.get(name, {})}
                for name in names}

    def cluster_snapshot(self) -> dict[str, Any] | None:
        return self.cluster.snapshot() if self.cluster is not None else None

    def readiness(self, health: StreamHealth) -> StreamReadiness:
        """One stream's readiness as last seen (no I/O; for metrics and /status)."""
        return stream_readiness(health, self.clock.now_ms(), self.max_frame_age_s,
                                self.model_errors(health.name))

    def model_errors(self, stream: str) -> list[str]:
        """Why the rules on ``stream`` got no answer from their model lately (if so)."""
        out = []
        for name, runner in self.runners().items():
            error = getattr(runner, "model_error", None)
            if error is not None and stream in runner.stream_names:
                out.append(f"rule {name}: {error[1]}")
        return out

    async def readiness_report(self) -> ReadinessReport:
        """Readiness now: each live stream's status is read from the API first."""
        keepers = list(self.keepers.values())
        await asyncio.gather(*(k.check_now() for k in keepers if hasattr(k, "check_now")),
                             return_exceptions=True)
        store = self.store_health.reason if self.store_health is not None else None
        return ReadinessReport([self.readiness(h) for h in self.healths()], store)

    def next_run_ms(self, rule: str) -> int | None:
        """When the engine runs ``rule`` next (Unix ms), if it can say."""
        engine: Any = self.engine
        if engine is None:
            return None
        public = getattr(engine, "next_run_at", None)
        if callable(public):
            when = public(rule)
        else:  # RuleEngine keeps its APScheduler private; its jobs are named by rule
            scheduler = getattr(engine, "_scheduler", None)
            job = scheduler.get_job(rule) if scheduler is not None and scheduler.running else None
            when = job.next_run_time if job is not None else None
        if isinstance(when, datetime):
            return int(when.astimezone(UTC).timestamp() * 1000)
        return int(when) if isinstance(when, int | float) else None


def _counts(value: Any) -> dict[str, int]:
    """The :data:`ACTION_FIELDS` of one action's stats (a dataclass, an object or a dict)."""
    found = value if isinstance(value, Mapping) else {
        key: getattr(value, key) for key in ACTION_FIELDS if hasattr(value, key)}
    return {key: int(found[key]) for key in ACTION_FIELDS
            if isinstance(found.get(key), int | float)}
