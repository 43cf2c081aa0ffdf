"""RuleRunner: confirmation by a second model, skipping unchanged video, bad answers."""

from __future__ import annotations

import time

import numpy as np
from support.models import ScriptedModel

from watcher.engine.state import Status

CONFIRM = {"confirm": {"model": "big", "prompt": "Really a person?",
                       "schema": {"confirmed": "boolean"}}}


async def test_confirm_rejects_a_triage_false_positive(make) -> None:
    triage = ScriptedModel("triage", '{"person": true}')
    big = ScriptedModel("big", '{"confirmed": false}')
    env = make(triage, big)
    runner = env.runner(**CONFIRM)
    for _ in range(3):
        env.clock.advance(5)
        result = await runner.evaluate()
        assert result.matched is True and result.confirmed is False
    assert runner.state.status == Status.INACTIVE
    assert len(big.requests) == 3 and runner.stats.confirmations == 3
    assert "Really a person?" in big.requests[0].messages[-1].text


async def test_confirm_lets_a_true_positive_fire_and_is_not_asked_while_firing(make) -> None:
    triage = ScriptedModel("triage", '{"person": true}')
    big = ScriptedModel("big", '{"confirmed": true}')
    env = make(triage, big)
    runner = env.runner(**CONFIRM)
    await runner.evaluate()
    assert runner.state.status == Status.FIRING
    events = await env.store.events()
    assert events[0].answer == {"confirmed": True} and events[0].extra["confirmed"] is True
    await runner.evaluate()
    await runner.evaluate()
    assert len(big.requests) == 1 and len(triage.requests) == 3


async def test_skip_unchanged_reuses_the_answer_until_the_picture_changes(make) -> None:
    triage = ScriptedModel("triage", '{"person": false}', '{"person": true}')
    env = make(triage)
    runner = env.runner(skip_unchanged=True)
    for _ in range(5):
        result = await runner.evaluate()
    assert len(triage.requests) == 1 and runner.stats.skipped_unchanged == 4
    assert result.outcome == "unchanged" and result.matched is False
    scene = np.full((48, 64, 3), 80, np.uint8)
    scene[10:40, 20:50] = 250  # something walked in
    env.stream.show(scene)
    result = await runner.evaluate()
    assert result.outcome == "answered" and result.matched is True
    assert runner.state.status == Status.FIRING and len(triage.requests) == 2


async def test_sensor_noise_is_not_a_change(make) -> None:
    triage = ScriptedModel("triage", '{"person": false}')
    env = make(triage)
    runner = env.runner(skip_unchanged=True)
    rng = np.random.default_rng(1)
    base = rng.integers(60, 200, (48, 64, 3)).astype(np.int16)
    for _ in range(20):
        noisy = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        env.stream.show(noisy)
        await runner.evaluate()
    assert len(triage.requests) == 1


async def test_invalid_answers_are_counted_and_never_fire(make) -> None:
    triage = ScriptedModel("triage", "yes, a person")
    env = make(triage)
    runner = env.runner()
    result = await runner.evaluate()
    assert result.outcome == "invalid" and result.matched is None
    assert runner.stats.invalid_answers == 1 and runner.state.status == Status.INACTIVE
    assert await env.store.events() == []


async def test_a_slow_model_hits_the_rules_timeout(make) -> None:
    env = make(ScriptedModel("triage", '{"person": true}', delay=2.0))
    runner = env.runner(timeout="200ms")
    result = await runner.evaluate()
    assert result.outcome == "model_error" and "timeout" in (result.detail or "")
    assert runner.stats.model_errors == 1 and runner.state.status == Status.INACTIVE


async def test_a_window_answer_is_reused_only_once_its_window_saw_no_change(make) -> None:
    triage = ScriptedModel("triage", '{"person": false}')
    env = make(triage)
    runner = env.runner(skip_unchanged=True, window="2s")
    scene = np.full((48, 64, 3), 80, np.uint8)
    scene[5:30, 5:30] = 240
    env.stream.show(scene, at=time.monotonic() - 10)  # changed long before the ask
    await runner.evaluate()
    await runner.evaluate()
    assert len(triage.requests) == 1 and runner.stats.skipped_unchanged == 1
    env.stream.show(np.full((48, 64, 3), 80, np.uint8))  # changed just now
    await runner.evaluate()
    await runner.evaluate()  # the window of the last answer still holds the change
    assert len(triage.requests) == 3 and runner.stats.skipped_unchanged == 1


async def test_a_rule_waits_while_its_camera_is_down_instead_of_judging_a_frozen_picture(
        make) -> None:
    triage = ScriptedModel("triage", '{"person": true}', '{"person": false}')
    env = make(triage)
    runner = env.runner(window="2s", **{"for": 1, "keep_firing_for": "0s"})
    await runner.evaluate()
    assert runner.state.status == Status.FIRING

    env.stream.source_live = False  # the camera went away; its last frame is repeated
    result = await runner.evaluate()
    assert result.outcome == "not_ready" and result.detail == "source cam is down"
    assert runner.state.status == Status.FIRING and len(triage.requests) == 1

    env.stream.source_live = True
    env.stream.source_resumed_at = time.monotonic() - 0.5  # back, but the window still
    result = await runner.evaluate()                       # reaches into the outage
    assert result.outcome == "not_ready" and "waiting for a full 2 s window" in result.detail
    assert runner.stats.skipped_not_ready == 2 and len(triage.requests) == 1

    env.stream.source_resumed_at = time.monotonic() - 2.5
    result = await runner.evaluate()
    assert result.outcome == "answered" and result.matched is False
    assert runner.state.status != Status.FIRING


async def test_after_a_camera_outage_the_longest_window_of_a_rule_must_be_new_video(
        make) -> None:
    env = make(ScriptedModel("triage", '{"person": false}'),
               ScriptedModel("big", '{"confirmed": true}'))
    confirm = {**CONFIRM["confirm"], "window": "5s"}
    runner = env.runner(confirm=confirm)  # the triage question has no window
    env.stream.source_resumed_at = time.monotonic() - 3
    result = await runner.evaluate()
    assert result.outcome == "not_ready" and "full 5 s window" in result.detail
    env.stream.source_resumed_at = time.monotonic() - 6
    assert (await runner.evaluate()).outcome == "answered"
