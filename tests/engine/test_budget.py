"""Budgets: a spent rule or model budget skips asks until its UTC hour or day rolls.

The engine runs for real (its scheduler on a cron that never fires during the
test) against the embedded server's app with scripted models; the budgets read
an injected :class:`ManualClock`, so windows roll when the test says.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from support.livestream import KeptStream, live_server
from support.models import ScriptedModel
from support.receivers import HttpReceiver
from support.status import Recorder

from watcher.actions.webhook import WebhookAction, WebhookOptions
from watcher.clock import ManualClock
from watcher.config import parse_config
from watcher.engine.budget import BudgetConfig
from watcher.engine.engine import RuleEngine
from watcher.engine.rules import RuleConfig
from watcher.engine.store import AlertStore
from watcher.engine.triggers import Trigger
from watcher.errors import ConfigError
from watcher.observe.report import render
from watcher.observe.server import create_status_app
from watcher.observe.source import StatusSource

HOUR_MS = 3_600_000
START_MS = int(datetime(2023, 11, 14, 10, 10, tzinfo=UTC).timestamp() * 1000)
"""Ten minutes into a clock hour."""
NEVER = "0 0 1 1 *"
"""A schedule that does not tick during a test: evaluations are driven by hand."""


def rule(name: str, **extra: Any) -> RuleConfig:
    return RuleConfig.model_validate({
        "name": name, "stream": "cam", "cron": NEVER, "prompt": "anyone?",
        "schema": {"person": "boolean"}, "model": "triage", **extra})


@contextlib.asynccontextmanager
async def engine_for(tmp_path: Path, rules: list[RuleConfig], *models: ScriptedModel,
                     model_budgets: dict[str, BudgetConfig] | None = None,
                     actions: dict[str, Any] | None = None,
                     ) -> AsyncIterator[tuple[RuleEngine, ManualClock, Recorder]]:
    site = live_server(*models)
    clock = ManualClock(START_MS)
    ops = Recorder("ops")
    async with site.http:
        store = AlertStore(tmp_path / "state.sqlite3")
        engine = RuleEngine(rules, client=site.client,
                            streams={"cam": KeptStream(site.stream_id)}, store=store,
                            default_model="triage", clock=clock,
                            actions={"ops": ops, **(actions or {})},
                            model_budgets=model_budgets)
        await engine.start()
        try:
            yield engine, clock, ops
        finally:
            await engine.stop()
            await engine.budgets.drain()
            await store.close()


def budget_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "watcher.engine.budget" and r.levelno == logging.WARNING]


async def test_a_spent_rule_budget_skips_logs_and_notifies_once_then_resumes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = ScriptedModel("triage", '{"person": false}')
    budget = {"calls_per_hour": 2, "notify": ["ops"]}
    async with engine_for(tmp_path, [rule("door", budget=budget)], model) as (engine, clock,
                                                                               ops):
        runner = engine.runners["door"]
        caplog.set_level(logging.WARNING, logger="watcher.engine.budget")
        outcomes = []
        for _ in range(5):
            clock.advance(60)
            outcomes.append((await runner.evaluate()).outcome)
        assert outcomes == ["answered", "answered", "over_budget", "over_budget",
                            "over_budget"]
        assert len(model.requests) == 2
        assert runner.stats.skipped_budget == 3 and runner.stats.evaluations == 2
        await engine.budgets.drain()
        window = START_MS - START_MS % HOUR_MS
        assert ops.keys == [f"budget:rule:door:hour:{window}:ops"]
        [warning] = budget_warnings(caplog)
        assert "rule door spent its budget: 2 calls this hour (limit 2)" in warning
        assert "2023-11-14T11:00:00Z" in warning

        clock.advance(50 * 60)  # 11:15: a new hour
        result = await runner.evaluate()
        assert result.outcome == "answered" and len(model.requests) == 3
        clock.advance(60)
        assert (await runner.evaluate()).outcome == "answered"
        clock.advance(60)
        assert (await runner.evaluate()).outcome == "over_budget"
        await engine.budgets.drain()
        assert ops.keys[1:] == [f"budget:rule:door:hour:{window + HOUR_MS}:ops"]
        assert len(budget_warnings(caplog)) == 2  # one per spent window


async def test_a_model_budget_is_shared_by_every_rule_asking_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = ScriptedModel("triage", '{"person": false}')
    other = ScriptedModel("other", '{"person": false}')
    budgets = {"triage": BudgetConfig(tokens_per_day=1)}
    rules = [rule("a"), rule("b"), rule("c", model="other")]
    async with engine_for(tmp_path, rules, model, other, model_budgets=budgets) as (
            engine, clock, ops):
        caplog.set_level(logging.WARNING, logger="watcher.engine.budget")
        a, b, c = (engine.runners[n] for n in "abc")
        assert (await a.evaluate()).outcome == "answered"  # its tokens pass the cap
        assert (await b.evaluate()).outcome == "over_budget"
        assert (await a.evaluate()).outcome == "over_budget"
        assert (await c.evaluate()).outcome == "answered"  # another model, no budget
        assert len(model.requests) == 1
        [warning] = budget_warnings(caplog)
        assert warning.startswith("model triage spent its budget:")
        assert "today" in warning and "2023-11-15T00:00:00Z" in warning
        clock.advance(24 * 3600)
        assert (await b.evaluate()).outcome == "answered"
        assert ops.keys == []  # no notify actions named


async def test_triggered_asks_are_skipped_while_the_budget_is_spent(tmp_path: Path) -> None:
    model = ScriptedModel("triage", '{"person": true}')
    spec = rule("follower", budget={"calls_per_day": 1}, on_change=True)
    async with engine_for(tmp_path, [spec], model) as (engine, _, _):
        runner = engine.runners["follower"]
        change = Trigger("change", stream="cam")
        assert (await runner.evaluate(trigger=change)).outcome == "answered"
        before = runner.state
        skipped = await runner.evaluate(trigger=change)
        assert skipped.outcome == "over_budget" and skipped.state is None
        assert runner.state == before  # the alert state waits, as when a stream is down
        assert runner.stats.by_trigger == {"change": 1}
        assert len(model.requests) == 1


async def test_repairs_count_as_calls_and_spend_survives_a_rule_change(tmp_path: Path,
                                                                      ) -> None:
    model = ScriptedModel("triage", "not json", '{"person": false}', '{"person": false}')
    async with engine_for(tmp_path, [rule("r", budget={"calls_per_hour": 3})], model) as (
            engine, _, _):
        first = await engine.runners["r"].evaluate()
        assert first.answer is not None and first.answer.repaired
        [status] = engine.budget_status()
        assert status["calls_this_hour"] == 2 and status["tokens_this_hour"] > 0
        changes = await engine.apply([rule("r", budget={"calls_per_hour": 3},
                                           prompt="anyone there?")])
        assert changes == ["rule r changed"]
        assert (await engine.runners["r"].evaluate()).outcome == "answered"
        assert (await engine.runners["r"].evaluate()).outcome == "over_budget"
        await engine.apply([rule("r", prompt="anyone there?")])  # budget removed
        assert engine.budget_status() == []
        assert (await engine.runners["r"].evaluate()).outcome == "answered"


async def test_metrics_and_status_show_spend_against_budget(tmp_path: Path) -> None:
    model = ScriptedModel("triage", '{"person": false}')
    budgets = {"triage": BudgetConfig(tokens_per_hour=1_000_000)}
    async with engine_for(tmp_path, [rule("door", budget={"calls_per_hour": 1})], model,
                          model_budgets=budgets) as (engine, _, _):
        runner = engine.runners["door"]
        await runner.evaluate()
        await runner.evaluate()
        app = create_status_app(StatusSource(keepers={}, engine=engine))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://status") as http:
            metrics = (await http.get("/metrics")).text
            doc = (await http.get("/status")).json()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    assert samples[("watcher_rule_skipped_total",
                    (("reason", "skipped_budget"), ("rule", "door")))] == 1
    rule_calls = (("name", "door"), ("period", "hour"), ("scope", "rule"), ("unit", "calls"))
    assert samples[("watcher_budget_spent", rule_calls)] == 1
    assert samples[("watcher_budget_limit", rule_calls)] == 1
    assert samples[("watcher_budget_exhausted", (("name", "door"), ("scope", "rule")))] == 1
    assert samples[("watcher_budget_exhausted", (("name", "triage"), ("scope", "model")))] == 0

    [door] = doc["rules"]
    assert door["stats"]["skipped_budget"] == 1
    by_name = {b["name"]: b for b in doc["budgets"]}
    assert by_name["door"]["exhausted"] and by_name["door"]["calls_per_hour"] == 1
    assert by_name["door"]["resumes_at"] == "2023-11-14T11:00:00Z"
    assert by_name["triage"]["tokens_this_hour"] > 0 and not by_name["triage"]["exhausted"]
    out = io.StringIO()
    render(doc, Console(file=out, width=200))
    text = out.getvalue()
    assert "Budgets (UTC hour and day)" in text
    assert "rule door" in text and "1/1" in text and "spent, resumes" in text
    assert f"{by_name['triage']['tokens_this_hour']}/1000000" in text


async def test_the_notice_reaches_a_real_webhook_once_per_window(tmp_path: Path) -> None:
    model = ScriptedModel("triage", '{"person": false}')
    budgets = {"triage": BudgetConfig(calls_per_day=1, notify=["hook"])}
    with HttpReceiver() as receiver:
        async with httpx.AsyncClient() as http:
            hook = WebhookAction("hook", WebhookOptions.model_validate(
                {"type": "webhook", "url": receiver.url()}), http=http)
            async with engine_for(tmp_path, [rule("a"), rule("b")], model,
                                  model_budgets=budgets, actions={"hook": hook}) as (
                    engine, clock, _):
                await engine.runners["a"].evaluate()
                for name in "abab":
                    assert (await engine.runners[name].evaluate()).outcome == "over_budget"
                await engine.budgets.drain()
                clock.advance(3600)  # the same UTC day: still spent, nothing more sent
                assert (await engine.runners["a"].evaluate()).outcome == "over_budget"
                await engine.budgets.drain()
    [request] = receiver.requests
    day = START_MS - START_MS % (24 * HOUR_MS)
    assert request.headers["idempotency-key"] == f"budget:model:triage:day:{day}:hook"
    body = request.json()
    assert body["rule"] == "budget:model:triage" and body["severity"] == "warning"
    assert body["labels"] == {"reason": "budget", "scope": "model", "name": "triage"}
    assert body["answer"]["limit"] == 1 and body["answer"]["unit"] == "calls"
    assert body["answer"]["resumes_at"] == "2023-11-15T00:00:00Z"
    assert "model triage spent its budget: 1 calls today (limit 1)" in body["text"]


HEAD = "streams:\n  - {name: cam, source: 'testsrc:'}\nactions:\n  ops: {type: webhook, " \
       "url: 'http://127.0.0.1:9/hook'}\n"


def test_budget_config_errors_name_file_line_and_field() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + "overshoot:\n  budgets:\n    triage:\n      calls_per_hour: 5\n"
                     "      notify: [opz]\nrules:\n  - name: r\n    stream: cam\n"
                     "    every: 5s\n    prompt: q\n    budget:\n      calls_per_day: 0\n",
                     name="w.yaml", environ={})
    problems = caught.value.problems
    assert any(p.startswith("w.yaml:16: rules[0].budget.calls_per_day:") for p in problems), (
        problems)
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + "overshoot:\n  budgets:\n    triage:\n      calls_per_hour: 5\n"
                     "      notify: [opz]\n", name="w.yaml", environ={})
    assert caught.value.problems == [
        "w.yaml:9: overshoot.budgets.triage.notify[0]: unknown action 'opz' "
        "(did you mean ops?)"]
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + "rules:\n  - name: r\n    stream: cam\n    every: 5s\n"
                     "    prompt: q\n    budget: {calls_per_hr: 5}\n", name="w.yaml",
                     environ={})
    assert any(p.startswith("w.yaml:10: rules[0].budget") for p in caught.value.problems)
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + "rules:\n  - name: r\n    stream: cam\n    every: 5s\n"
                     "    prompt: q\n    schema: {people: integer}\n    when: people > 0\n"
                     "    budget: {notify: [ops]}\n", name="w.yaml", environ={})
    assert any("set at least one of calls_per_hour" in p for p in caught.value.problems)
    config = parse_config(HEAD + "overshoot:\n  budgets:\n    triage: {tokens_per_day: 9}\n"
                          "rules:\n  - name: r\n    stream: cam\n    every: 5s\n"
                          "    prompt: q\n    schema: {people: integer}\n"
                          "    when: people > 0\n"
                          "    budget: {calls_per_hour: 5, notify: [ops]}\n",
                          name="w.yaml", environ={})
    assert config.rules[0].budget == BudgetConfig(calls_per_hour=5, notify=["ops"])
    assert config.overshoot.budgets["triage"].tokens_per_day == 9


async def test_spend_survives_a_restart_until_its_window_rolls(tmp_path: Path) -> None:
    model = ScriptedModel("triage", '{"person": false}')
    budgets = {"triage": BudgetConfig(calls_per_day=5)}
    spec = [rule("door", budget={"calls_per_hour": 2, "notify": ["ops"]})]
    async with engine_for(tmp_path, spec, model, model_budgets=budgets) as (engine, _, ops):
        for _ in range(2):
            assert (await engine.runners["door"].evaluate()).outcome == "answered"
        assert (await engine.runners["door"].evaluate()).outcome == "over_budget"
        await engine.budgets.drain()
        assert len(ops.keys) == 1
    async with engine_for(tmp_path, spec, model, model_budgets=budgets) as (engine, clock,
                                                                             ops):
        runner = engine.runners["door"]
        assert (await runner.evaluate()).outcome == "over_budget"  # still this hour
        await engine.budgets.drain()
        assert ops.keys == []  # the run before sent this window's notice
        by_name = {b["name"]: b for b in engine.budget_status()}
        assert by_name["triage"]["calls_this_day"] == 2
        clock.advance(3600)
        assert (await runner.evaluate()).outcome == "answered"  # a new hour, the same day
        assert {b["name"]: b for b in engine.budget_status()}["triage"]["calls_this_day"] == 3
    async with engine_for(tmp_path, spec, model, model_budgets=budgets) as (engine, clock, _):
        clock.advance(2 * 3600)  # 12:10, past the stored 11:00 hour: it no longer counts
        [door] = [b for b in engine.budget_status() if b["name"] == "door"]
        assert door["calls_this_hour"] == 0
        assert {b["name"]: b for b in engine.budget_status()}["triage"]["calls_this_day"] == 3
