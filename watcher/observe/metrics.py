"""Prometheus metrics, read from the daemon's live objects at scrape time.

:func:`build_registry` returns a registry of its own (nothing is added to
prometheus_client's global ``REGISTRY``) holding the process collector and one
:class:`WatcherCollector`, which turns a :class:`~watcher.observe.source.StatusSource`
into these families when scraped:

per stream (label ``stream``)
    ``watcher_stream_frames_published_total``, ``watcher_stream_publish_frames_per_second``,
    ``watcher_stream_publisher_reconnects_total``, ``watcher_stream_source_reconnects_total``,
    ``watcher_stream_keepalives_total``, ``watcher_stream_keepalive_failures_total``,
    ``watcher_stream_created_total`` (API streams created, recreations included),
    ``watcher_stream_lease_remaining_seconds`` (absent while there is no lease),
    ``watcher_stream_last_frame_timestamp_seconds`` (API clock), ``watcher_stream_live``
    and ``watcher_stream_ready`` (0/1, as /readyz judges it), ``watcher_stream_state``
    (label ``state``, 1 for the current one), ``watcher_stream_source_up`` (0/1)
per rule (label ``rule``)
    ``watcher_rule_evaluations_total``, ``watcher_rule_triggered_evaluations_total`` (label
    ``trigger``: tick, change, alert), ``watcher_rule_skipped_total`` (label ``reason``:
    not_ready | unchanged | skipped_budget), ``watcher_rule_model_calls_total``,
    ``watcher_rule_invalid_answers_total``, ``watcher_rule_model_errors_total``,
    ``watcher_rule_condition_errors_total``, ``watcher_rule_confirmations_total``,
    ``watcher_rule_tokens_total`` (label ``kind``: prompt | completion),
    ``watcher_rule_events_total``, ``watcher_rule_alert_state`` (label ``state``, 1 for the
    current one), ``watcher_rule_model_latency_seconds`` (histogram),
    ``watcher_rule_tick_lateness_seconds`` (histogram), ``watcher_rule_missed_ticks_total``,
    ``watcher_rule_overrun_ticks_total``, ``watcher_rule_tick_errors_total``
per action (label ``action``)
    counters since the outbox started: ``watcher_action_sent_total``,
    ``watcher_action_failed_attempts_total``, ``watcher_action_retries_total``,
    ``watcher_action_dead_lettered_total``, ``watcher_action_summaries_total``,
    ``watcher_action_summarized_total``, ``watcher_action_held_total``; as stored now
    (read by ``StatusSource.refresh`` before each scrape): ``watcher_action_pending_deliveries``,
    ``watcher_action_in_flight_deliveries``, ``watcher_action_dead_letters``
the state store
    ``watcher_store_errors_total`` (failed store calls), ``watcher_store_up`` (0 while it
    is unavailable), ``watcher_store_pending_steps`` (alert steps waiting to be written)
per budget (labels ``scope``: rule | model, ``name``; see :mod:`watcher.engine.budget`)
    ``watcher_budget_spent`` and ``watcher_budget_limit`` (labels ``period``: hour | day,
    ``unit``: calls | tokens; current UTC window), ``watcher_budget_exhausted`` (0/1)
the cluster families of :mod:`watcher.cluster.observe` (cluster mode only),
and ``watcher_build_info{version,python}`` (always 1).

The histograms are real prometheus_client histograms: each scrape drains the
samples the runners (``RuleStats.latencies_s``) and the engine
(``TickStats.lateness_s``) collected since the last one into them, so one
registry per daemon must do the scraping (two would split the samples).
"""

from __future__ import annotations

import logging
import platform
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher import __version__
from watcher.cluster.observe import metric_families
from watcher.engine.engine import TickStats
from watcher.engine.state import Status
from watcher.engine.triggers import TRIGGER_KINDS
from watcher.keeper.health import StreamHealth
from watcher.observe.source import Runner, StatusSource

log = logging.getLogger(__name__)
T = TypeVar("T")

STREAM_STATES = ("starting", "waiting_for_source", "creating", "publishing",
                 "waiting_for_first_frame", "live", "recovering", "stopping", "stopped")
ALERT_STATES = tuple(str(status) for status in Status)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# (name, help, StreamHealth attribute): counters, then gauges
_STREAM_COUNTERS = (
    ("watcher_stream_frames_published", "Video frames the publisher sent to the API.",
     "frames_sent"),
    ("watcher_stream_publisher_reconnects", "Publisher connections restarted.",
     "publisher_reconnects"),
    ("watcher_stream_source_reconnects", "Times the video source was reopened.",
     "source_reconnects"),
    ("watcher_stream_keepalives", "Lease renewals that succeeded.", "keepalives"),
    ("watcher_stream_keepalive_failures", "Lease renewals that failed.", "keepalive_failures"),
    ("watcher_stream_created", "API streams created for this stream (recreations included).",
     "streams_created"),
)
# (name, help, RuleStats attribute)
_RULE_COUNTERS = (
    ("watcher_rule_evaluations", "Evaluations with every stream live.", "evaluations"),
    ("watcher_rule_model_calls", "Model answers received (valid or not).", "model_calls"),
    ("watcher_rule_invalid_answers", "Answers that did not fit the rule's schema.",
     "invalid_answers"),
    ("watcher_rule_model_errors", "Evaluations left without an answer (API or model errors).",
     "model_errors"),
    ("watcher_rule_condition_errors", "Answers the condition could not be evaluated on.",
     "condition_errors"),
    ("watcher_rule_confirmations", "Confirming questions asked.", "confirmations"),
    ("watcher_rule_events", "Alert events recorded (firing, repeat, resolved).", "events"),
)
# (name, help, TickStats attribute)
_TICK_COUNTERS = (
    ("watcher_rule_missed_ticks", "Scheduled runs skipped: too late, or coalesced.", "missed"),
    ("watcher_rule_overrun_ticks", "Scheduled runs dropped because the last one still ran.",
     "overruns"),
    ("watcher_rule_tick_errors", "Scheduled runs that raised.", "errors"),
)
# (name, help, outbox count, counter?)
_ACTION_METRICS = (
    ("watcher_action_sent", "Deliveries sent one by one.", "sent", True),
    ("watcher_action_failed_attempts", "Delivery attempts (of a delivery or a summary) that "
     "failed.", "failed", True),
    ("watcher_action_retries", "Failed deliveries scheduled for another attempt.", "retries",
     True),
    ("watcher_action_dead_lettered", "Deliveries given up on (dead-lettered).", "dead", True),
    ("watcher_action_summaries", "Rate-limit summary messages sent.", "summaries", True),
    ("watcher_action_summarized", "Deliveries those summaries stood for.", "summarized", True),
    ("watcher_action_held", "Times a delivery was held back by the rate limit.", "held", True),
    ("watcher_action_pending_deliveries", "Deliveries waiting to be (re)tried, as stored.",
     "pending", False),
    ("watcher_action_in_flight_deliveries", "Deliveries being attempted, as stored.",
     "in_flight", False),
    ("watcher_action_dead_letters", "Dead-lettered deliveries kept in the store "
     "(`watcher alerts --dead`).", "dead_letters", False),
)


class WatcherCollector(Collector):
    """Reads streams, rules and actions from a :class:`StatusSource` when scraped."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source
        self.model_latency = Histogram(
            "watcher_rule_model_latency_seconds", "Time a model took to answer a rule's question.",
            ["rule"], registry=None, buckets=LATENCY_BUCKETS)
        self.tick_lateness = Histogram(
            "watcher_rule_tick_lateness_seconds", "How late a rule's run started after its "
            "scheduled time.", ["rule"], registry=None, buckets=LATENESS_BUCKETS)

    def describe(self) -> Iterable[Metric]:
        """The families without samples (so registering does not scrape)."""
        yield from self._build([], {}, {}, {})

    def collect(self) -> Iterable[Metric]:
        source = self.source
        yield from self._build(_read("streams", source.healths, []),
                               _read("rules", source.runners, {}),
                               _read("ticks", source.ticks, {}),
                               _read("actions", source.action_stats, {}))

    def _build(self, healths: list[StreamHealth], runners: dict[str, Runner],
               ticks: dict[str, TickStats], actions: dict[str, dict[str, int]],
               ) -> Iterator[Metric]:
        yield from self._streams(healths)
        yield from self._rules(runners, ticks)
        yield from _actions(actions)
        yield from self._store()
        yield from _budgets(_read("budgets", self.source.budgets, []))
        cluster = _read("cluster", self.source.cluster_snapshot, None)
        if cluster is not None:
            yield from metric_families(cluster)
        info = GaugeMetricFamily("watcher_build_info", "watcher's version and Python's (always 1).",
                                 labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

    def _store(self) -> Iterator[Metric]:
        health: Any = self.source.store_health
        if health is None:
            return
        errors = CounterMetricFamily("watcher_store_errors", "State store calls that failed.")
        errors.add_metric([], health.errors_total)
        up = GaugeMetricFamily("watcher_store_up", "1 while the state store takes writes.")
        up.add_metric([], 1 if health.reason is None else 0)
        pending = GaugeMetricFamily("watcher_store_pending_steps", "Alert steps kept in "
                                    "memory until the state store takes them.")
        pending.add_metric([], _read("pending steps", health.pending, 0))
        yield from (errors, up, pending)

    def _streams(self, healths: list[StreamHealth]) -> Iterator[Metric]:
        for name, help_text, attr in _STREAM_COUNTERS:
            yield _family(CounterMetricFamily, name, help_text, ["stream"],
                          ((h.name, getattr(h, attr)) for h in healths))
        fps = GaugeMetricFamily("watcher_stream_publish_frames_per_second",
                                "Frames per second the publisher is sending.", labels=["stream"])
        lease = GaugeMetricFamily("watcher_stream_lease_remaining_seconds",
                                  "Time left on the stream's lease (absent without a lease).",
                                  labels=["stream"])
        last_frame = GaugeMetricFamily("watcher_stream_last_frame_timestamp_seconds",
                                       "When the API last received a frame (API clock).",
                                       labels=["stream"])
        live = GaugeMetricFamily("watcher_stream_live", "1 while the stream is leased and "
                                 "queryable by rules.", labels=["stream"])
        ready = GaugeMetricFamily("watcher_stream_ready", "1 while /readyz counts the stream "
                                  "ready (live, leased, a recent frame).", labels=["stream"])
        state = GaugeMetricFamily("watcher_stream_state", "The keeper's state (1 for the "
                                  "current one).", labels=["stream", "state"])
        source_up = GaugeMetricFamily("watcher_stream_source_up", "1 while the camera or file "
                                      "delivers frames (rules on it wait while it is 0).",
                                      labels=["stream"])
        for h in healths:
            source_up.add_metric([h.name], 1 if h.source_state == "live" else 0)
            fps.add_metric([h.name], h.publish_fps)
            if h.lease_remaining_s is not None:
                lease.add_metric([h.name], max(0.0, h.lease_remaining_s))
            if h.last_frame_at_ms is not None:
                last_frame.add_metric([h.name], h.last_frame_at_ms / 1000)
            live.add_metric([h.name], 1 if h.live else 0)
            ready.add_metric([h.name], 1 if self.source.readiness(h).ready else 0)
            states = STREAM_STATES if h.state in STREAM_STATES else (*STREAM_STATES, h.state)
            for value in states:
                state.add_metric([h.name, value], 1 if value == h.state else 0)
        yield from (fps, lease, last_frame, live, ready, state, source_up)

    def _rules(self, runners: dict[str, Runner], ticks: dict[str, TickStats],
               ) -> Iterator[Metric]:
        stats = {name: runner.stats for name, runner in runners.items()}
        for name, help_text, attr in _RULE_COUNTERS:
            yield _family(CounterMetricFamily, name, help_text, ["rule"],
                          ((rule, getattr(s, attr)) for rule, s in stats.items()))
        skipped = CounterMetricFamily("watcher_rule_skipped", "Evaluations skipped, by reason: "
                                      "a stream not live (not_ready), the picture unchanged "
                                      "(unchanged), or the rule's or its model's budget spent "
                                      "(skipped_budget).", labels=["rule", "reason"])
        tokens = CounterMetricFamily("watcher_rule_tokens", "Model tokens used, by kind.",
                                     labels=["rule", "kind"])
        alert = GaugeMetricFamily("watcher_rule_alert_state", "The rule's alert state (1 for "
                                  "the current one).", labels=["rule", "state"])
        triggered = CounterMetricFamily(
            "watcher_rule_triggered_evaluations", "Evaluations by what caused them: the "
            "schedule (tick), a changed picture (change), another rule firing (alert).",
            labels=["rule", "trigger"])
        for rule, s in stats.items():
            for kind in TRIGGER_KINDS:
                triggered.add_metric([rule, kind], s.by_trigger.get(kind, 0))
            skipped.add_metric([rule, "not_ready"], s.skipped_not_ready)
            skipped.add_metric([rule, "unchanged"], s.skipped_unchanged)
            skipped.add_metric([rule, "skipped_budget"], s.skipped_budget)
            tokens.add_metric([rule, "prompt"], s.prompt_tokens)
            tokens.add_metric([rule, "completion"], s.completion_tokens)
            current = str(runners[rule].state.status)
            for value in ALERT_STATES:
                alert.add_metric([rule, value], 1 if value == current else 0)
            _drain(s.latencies_s, self.model_latency.labels(rule).observe)
        yield from (skipped, tokens, alert, triggered)
        for name, help_text, attr in _TICK_COUNTERS:
            yield _family(CounterMetricFamily, name, help_text, ["rule"],
                          ((rule, getattr(t, attr)) for rule, t in ticks.items()))
        for rule, t in ticks.items():
            _drain(t.lateness_s, self.tick_lateness.labels(rule).observe)
        yield from self.model_latency.collect()
        yield from self.tick_lateness.collect()


def _budgets(budgets: list[dict[str, Any]]) -> Iterator[Metric]:
    """Spend and caps of each budget in the current UTC hour and day."""
    labels = ["scope", "name", "period", "unit"]
    spent = GaugeMetricFamily("watcher_budget_spent", "Model calls or tokens spent in the "
                              "current UTC hour or day, against a rule's or model's budget.",
                              labels=labels)
    limit = GaugeMetricFamily("watcher_budget_limit", "The budget's cap for that hour or "
                              "day (only caps that are set).", labels=labels)
    exhausted = GaugeMetricFamily("watcher_budget_exhausted", "1 while the budget is spent "
                                  "(its rules skip their asks).", labels=["scope", "name"])
    for b in budgets:
        for unit in ("calls", "tokens"):
            for period in ("hour", "day"):
                key = [b["scope"], b["name"], period, unit]
                spent.add_metric(key, b[f"{unit}_this_{period}"])
                if b.get(f"{unit}_per_{period}") is not None:
                    limit.add_metric(key, b[f"{unit}_per_{period}"])
        exhausted.add_metric([b["scope"], b["name"]], 1 if b["exhausted"] else 0)
    yield from (spent, limit, exhausted)


def _actions(actions: dict[str, dict[str, int]]) -> Iterator[Metric]:
    for name, help_text, key, counter in _ACTION_METRICS:
        kind = CounterMetricFamily if counter else GaugeMetricFamily
        yield _family(kind, name, help_text, ["action"],
                      ((action, counts[key]) for action, counts in actions.items()
                       if key in counts))


def _read(what: str, read: Callable[[], T], default: T) -> T:
    """``read()``; on an error, log it and use ``default`` (one broken part must not blank
    the whole scrape)."""
    try:
        return read()
    except Exception:
        log.exception("metrics: cannot read the %s", what)
        return default


def _family(kind: Callable[..., Any], name: str, help_text: str, labels: list[str],
            samples: Iterable[tuple[str, float]]) -> Metric:
    family = kind(name, help_text, labels=labels)
    for label, value in samples:
        family.add_metric([label], value)
    return family


def _drain(samples: deque[float], observe: Callable[[float], None]) -> None:
    """Move every sample into the histogram."""
    while samples:
        observe(samples.popleft())


def build_registry(source: StatusSource, *, process: bool = True) -> CollectorRegistry:
    """A registry of its own with watcher's collector (and the process collector)."""
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(registry=registry)
    registry.register(WatcherCollector(source))
    return registry
