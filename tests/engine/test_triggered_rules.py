"""Rules that ask when the picture changes or another rule fires: real WebRTC, a real
embedded server, a camera whose scene the test scripts and a scripted model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.keeper import KEY, make_harness
from support.keeper import Spec as KeeperSpec
from support.models import ScriptedModel
from support.poll import eventually
from support.scripted_camera import script_source

from watcher.clock import SystemClock
from watcher.engine.engine import RuleEngine
from watcher.engine.rules import RuleConfig
from watcher.engine.state import Status
from watcher.engine.store import AlertStore
from watcher.engine.triggered import THUMBNAILS
from watcher.server.backends.base import ChatInput
from watcher.server.settings import ServerSettings

MODEL = "scripted"
NEVER = "0 0 1 1 *"
"""A heartbeat that does not come during a test (once a year)."""


def answers(camera_of, by_rule: dict[str, str] | None = None):
    """The scripted model: ``{"object": <the camera's event>}``; ``by_rule`` pins a rule's
    answer text instead."""
    def reply(request: ChatInput) -> str:
        name = (request.response_format or {}).get("json_schema", {}).get("name")
        if by_rule and name in by_rule:
            return by_rule[name]
        return json.dumps({"object": camera_of().event, "description": "a box"})
    return reply


@pytest.fixture
async def site(tmp_path: Path):
    h = await make_harness(ServerSettings(api_keys=[KEY], ttl_seconds=30), SystemClock())
    keeper = h.keeper(KeeperSpec(name="cam", fps=10, width=320, height=240))
    camera = script_source(keeper)
    keeper.start()
    await keeper.wait_live(20)
    store = AlertStore(tmp_path / "state.sqlite3")
    engines: list[RuleEngine] = []

    def engine(rules: list[dict], model: ScriptedModel) -> RuleEngine:
        h.server.backends[MODEL] = model
        made = RuleEngine([RuleConfig.model_validate(r) for r in rules], client=h.client,
                          streams={"cam": keeper}, store=store, default_model=MODEL)
        engines.append(made)
        return made

    yield engine, keeper, camera
    for made in engines:
        await made.stop()
    await keeper.stop()
    await store.close()
    await h.server.aclose()
    await h.http.aclose()


def rule(name: str, **extra) -> dict:
    return {"name": name, "stream": "cam", "prompt": "Is there an object?",
            "schema": {"object": "boolean", "description": "string"}, "when": "object",
            **extra}


async def test_an_object_appearing_fires_without_waiting_for_the_heartbeat(site) -> None:
    make, _keeper, camera = site
    model = ScriptedModel(MODEL, answers(camera))
    engine = make([rule("door", on_change=True, cron=NEVER, window="1s", max_fps=5)], model)
    observed: list[tuple[str, str | None]] = []
    engine.triggers.change_observers.append(lambda r, t: observed.append((r, t.stream)))
    await engine.start()
    runner = engine.runners["door"]
    seen = camera().frames
    await eventually(lambda: camera().frames >= seen + 10, 30)  # quiet: nothing asked
    assert runner.stats.evaluations == 0
    camera().event = True
    await eventually(lambda: runner.state.status is Status.FIRING, 60)
    assert set(runner.stats.by_trigger) == {"change"}
    assert observed and set(observed) == {("door", "cam")}
    assert len(observed) == engine.triggers.gates["door"].stats.requested
    url = model.requests[0].raw["messages"][-1]["content"][1]["video_url"]["url"]
    assert "start_offset_ms=" in url  # a window ending at the change (or now)
    events = await engine.store.events(limit=5)
    assert [(e.kind, e.extra["trigger"]) for e in events] == [("firing", "change")]


async def test_a_static_noisy_scene_with_a_clock_asks_only_at_the_heartbeat(site) -> None:
    make, _keeper, camera = site
    model = ScriptedModel(MODEL, answers(camera))
    engine = make([rule("door", on_change=True, every="1s")], model)
    await engine.start()
    runner = engine.runners["door"]
    seen = camera().frames
    await eventually(lambda: camera().frames >= seen + 50
                     and runner.stats.by_trigger.get("tick", 0) >= 2, 60)
    assert "change" not in runner.stats.by_trigger
    assert engine.triggers.watches["door"].changes == 0


async def test_on_alert_asks_the_follower_once_per_firing_with_the_leaders_answer(
        site) -> None:
    make, _keeper, camera = site
    leader_answer = {"text": json.dumps({"object": True, "description": "a person at the gate"})}
    model = ScriptedModel(MODEL, answers(camera, leader_answer))
    follower_prompt = ("The {{ trigger.rule }} camera saw: {{ trigger.answer.description }}. "
                       "Is anyone in the yard?")
    engine = make([rule("gate", cron=NEVER),
                   rule("yard", cron=NEVER, on_alert=["gate"], prompt=follower_prompt)], model)
    await engine.start()
    leader, follower = engine.runners["gate"], engine.runners["yard"]
    leader_answer["gate"] = leader_answer.pop("text")
    await leader.evaluate()
    assert leader.state.status is Status.FIRING
    await eventually(lambda: follower.stats.model_calls == 1, 30)
    prompts = [r.prompt_text for r in model.requests
               if r.response_format["json_schema"]["name"] == "yard"]
    assert len(prompts) == 1
    assert "The gate camera saw: a person at the gate. Is anyone in the yard?" in prompts[0]
    await leader.evaluate()  # still firing: no new firing, no new follow-up
    leader_answer["gate"] = json.dumps({"object": False, "description": "nobody"})
    await leader.evaluate()
    assert leader.state.status is Status.RESOLVED
    leader_answer["gate"] = json.dumps({"object": True, "description": "a van at the gate"})
    await leader.evaluate()
    await eventually(lambda: follower.stats.model_calls == 2, 30)
    assert follower.stats.by_trigger == {"alert": 2}
    last = [r.prompt_text for r in model.requests
            if r.response_format["json_schema"]["name"] == "yard"][-1]
    assert "a van at the gate" in last


async def test_streams_are_told_whether_rules_need_their_thumbnails_across_reloads(
        site) -> None:
    make, keeper, camera = site
    demand = keeper.frames.demand
    assert THUMBNAILS not in demand.holders
    model = ScriptedModel(MODEL, answers(camera))
    plain = rule("plain", cron=NEVER)
    engine = make([plain], model)
    await engine.start()
    assert THUMBNAILS not in demand.holders  # no rule compares pictures
    skipping = rule("skipping", cron=NEVER, skip_unchanged=True)
    await engine.apply([RuleConfig.model_validate(r) for r in (plain, skipping)])
    assert THUMBNAILS in demand.holders
    changing = rule("door", on_change=True, cron=NEVER, window="1s", max_fps=5)
    await engine.apply([RuleConfig.model_validate(r) for r in (plain, changing)])
    assert THUMBNAILS in demand.holders
    await engine.apply([RuleConfig.model_validate(plain)])
    assert THUMBNAILS not in demand.holders
    await engine.apply([RuleConfig.model_validate(changing)])
    assert THUMBNAILS in demand.holders
    await engine.stop()
    assert THUMBNAILS not in demand.holders
