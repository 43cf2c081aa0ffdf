"""Prometheus metrics: scraped from a real run, and the collector's contract."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.poll import eventually
from support.status import RULE, Running, running_daemon

from watcher import __version__
from watcher.keeper.health import StreamHealth
from watcher.observe.metrics import build_registry
from watcher.observe.source import StatusSource

RULE_NAME = RULE["name"]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value of a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape[(name, frozenset(labels.items()))]


async def scrape(d: Running) -> dict[tuple[str, frozenset], float]:
    response = await d.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


async def test_metrics_of_a_short_run(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d:
        await d.keeper.wait_live(15)
        await eventually(lambda: d.runner.stats.model_calls >= 3
                         and d.outbox.stats["ops"].sent >= 1, timeout=15)
        # Missed and overrun ticks depend on the machine's load: the scrape must report
        # the engine's own counts, read just before and after it.
        ticks = d.engine.ticks[RULE_NAME]
        ticks_before = {"missed": ticks.missed, "overrun": ticks.overruns}
        m = await scrape(d)
        ticks_after = {"missed": ticks.missed, "overrun": ticks.overruns}
        calls = value(m, "watcher_rule_model_calls_total", rule=RULE_NAME)

        # streams
        assert value(m, "watcher_stream_frames_published_total", stream="cam") > 0
        assert value(m, "watcher_stream_live", stream="cam") == 1
        assert value(m, "watcher_stream_source_up", stream="cam") == 1
        assert value(m, "watcher_stream_ready", stream="cam") == 1
        assert 0 < value(m, "watcher_stream_lease_remaining_seconds", stream="cam") <= 6
        assert value(m, "watcher_stream_created_total", stream="cam") == 1
        assert value(m, "watcher_stream_state", stream="cam", state="live") == 1
        assert value(m, "watcher_stream_state", stream="cam", state="recovering") == 0
        for name in ("publisher_reconnects", "source_reconnects", "keepalive_failures"):
            assert value(m, f"watcher_stream_{name}_total", stream="cam") == 0
        assert ("watcher_stream_keepalives_total", frozenset({("stream", "cam")})) in m
        assert ("watcher_stream_publish_frames_per_second", frozenset({("stream", "cam")})) in m

        # rules
        assert value(m, "watcher_rule_evaluations_total", rule=RULE_NAME) >= 3
        assert calls >= 3
        assert value(m, "watcher_rule_skipped_total", rule=RULE_NAME, reason="unchanged") == 0
        assert ("watcher_rule_skipped_total",
                frozenset({("rule", RULE_NAME), ("reason", "not_ready")})) in m
        assert value(m, "watcher_rule_tokens_total", rule=RULE_NAME, kind="prompt") > 0
        assert value(m, "watcher_rule_tokens_total", rule=RULE_NAME, kind="completion") > 0
        for name in ("invalid_answers", "model_errors", "condition_errors", "tick_errors"):
            assert value(m, f"watcher_rule_{name}_total", rule=RULE_NAME) == 0, name
        for name in ("missed", "overrun"):
            scraped = value(m, f"watcher_rule_{name}_ticks_total", rule=RULE_NAME)
            assert ticks_before[name] <= scraped <= ticks_after[name], name
        assert value(m, "watcher_rule_events_total", rule=RULE_NAME) == 1
        assert value(m, "watcher_rule_alert_state", rule=RULE_NAME, state="firing") == 1
        assert value(m, "watcher_rule_alert_state", rule=RULE_NAME, state="inactive") == 0
        assert value(m, "watcher_rule_model_latency_seconds_count", rule=RULE_NAME) == calls
        assert value(m, "watcher_rule_model_latency_seconds_bucket", rule=RULE_NAME,
                     le="+Inf") == calls
        assert value(m, "watcher_rule_tick_lateness_seconds_count", rule=RULE_NAME) >= calls

        # actions
        assert value(m, "watcher_action_sent_total", action="ops") == 1
        for name in ("failed_attempts", "retries", "dead_lettered", "summarized"):
            assert value(m, f"watcher_action_{name}_total", action="ops") == 0, name
        assert value(m, "watcher_action_pending_deliveries", action="ops") == 0
        assert value(m, "watcher_action_dead_letters", action="ops") == 0

        assert value(m, "watcher_build_info", version=__version__,
                     python=platform.python_version()) == 1
        assert ("process_start_time_seconds", frozenset()) in m

        # The scrape drained the runner's latencies into the histogram: nothing is counted
        # twice, and later answers add to it.
        assert not d.runner.stats.latencies_s
        await eventually(lambda: d.runner.stats.model_calls >= calls + 2, timeout=10)
        again = await scrape(d)
        assert value(again, "watcher_rule_model_latency_seconds_count", rule=RULE_NAME) == (
            value(again, "watcher_rule_model_calls_total", rule=RULE_NAME)) >= calls + 2

        openmetrics = await d.get("/metrics",
                                  headers={"accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")


class Keeper:
    def __init__(self, **fields: object) -> None:
        base = dict(name="cam", state="live", stream_id="s1", frames_sent=5, publish_fps=2.5,
                    last_frame_at_ms=None, last_keepalive_at_ms=None, lease_remaining_s=None,
                    streams_created=1, publisher_reconnects=0, keepalives=0,
                    keepalive_failures=0, source_state="live", source_reconnects=0,
                    last_error=None)
        self.fields = {**base, **fields}

    def health(self) -> StreamHealth:
        return StreamHealth(**self.fields)  # type: ignore[arg-type]


class Broken:
    def health(self) -> StreamHealth:
        raise RuntimeError("boom")


def test_own_registry_and_scrape_time_reads(caplog: pytest.LogCaptureFixture) -> None:
    keepers: dict[str, object] = {"cam": Keeper(state="recovering", stream_id=None,
                                                source_state="reconnecting")}
    registry = build_registry(StatusSource(keepers=keepers), process=False)
    other = build_registry(StatusSource(keepers={}), process=False)  # no clash between them
    m = samples(prometheus_client.generate_latest(registry).decode())
    assert value(m, "watcher_stream_live", stream="cam") == 0
    assert value(m, "watcher_stream_state", stream="cam", state="recovering") == 1
    assert value(m, "watcher_stream_source_up", stream="cam") == 0
    assert ("watcher_stream_lease_remaining_seconds", frozenset({("stream", "cam")})) not in m
    assert not any(name.startswith("watcher_action") for name, _ in m)  # no outbox, no series

    keepers["cam"] = Keeper(lease_remaining_s=12.5, last_frame_at_ms=1_700_000_000_000)
    m = samples(prometheus_client.generate_latest(registry).decode())
    assert value(m, "watcher_stream_live", stream="cam") == 1
    assert value(m, "watcher_stream_lease_remaining_seconds", stream="cam") == 12.5
    assert value(m, "watcher_stream_last_frame_timestamp_seconds", stream="cam") == 1.7e9

    keepers["cam"] = Broken()
    with caplog.at_level(logging.ERROR, logger="watcher.observe.metrics"):
        m = samples(prometheus_client.generate_latest(registry).decode())
    assert "cannot read the streams" in caplog.text
    assert ("watcher_build_info", frozenset({("version", __version__),
                                             ("python", platform.python_version())})) in m

    assert prometheus_client.REGISTRY.get_sample_value(
        "watcher_build_info", {"version": __version__, "python": platform.python_version()},
    ) is None
    assert samples(prometheus_client.generate_latest(other).decode())
