"""Asking: request shape, validation, one repair round, fallbacks, stream errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import cv2
import httpx
import numpy as np
import pytest
from support.models import ScriptedModel

from watcher.clock import ManualClock
from watcher.engine.ask import (
    ModelsExhausted,
    Question,
    StreamNotReady,
    ask,
    build_request,
    parse_answer,
)
from watcher.overshoot.client import CHAT_POLICY, OvershootClient, Policies
from watcher.server.app import create_app
from watcher.server.backends.vision import VisionModel
from watcher.server.problems import ChatProblem
from watcher.server.settings import ServerSettings

KEY = "ovs_ask_tests"
SCHEMA = {"type": "object", "properties": {"person_present": {"type": "boolean"},
                                           "people": {"type": "integer"}},
          "required": ["person_present", "people"], "additionalProperties": False}


class Env:
    def __init__(self, *models: ScriptedModel) -> None:
        self.clock = ManualClock()
        self.app = create_app(ServerSettings(api_keys=[KEY]), clock=self.clock,
                              backends=[*models, VisionModel()])
        self.server = self.app.state.server
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                      base_url="http://t/v1beta")
        fast = Policies(chat=replace(CHAT_POLICY, delays=(0.0, 0.0)))
        self.client = OvershootClient("http://t/v1beta", KEY, http=self.http, policies=fast,
                                      jitter=0)

    def stream_with_frames(self, frames: list[np.ndarray], interval_ms: int = 200) -> str:
        stream = self.server.registry.create(self.server.owner_of(f"Bearer {KEY}"))
        for i, frame in enumerate(frames):
            if i:
                self.clock.advance(interval_ms / 1000)
            self.server.registry.add_frame(stream, cv2.imencode(".jpg", frame)[1].tobytes())
        return stream.id


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    holder: list[Env] = []

    def make(*models: ScriptedModel) -> Env:
        holder.append(Env(*models))
        return holder[-1]

    yield make  # type: ignore[misc]
    for e in holder:
        await e.http.aclose()


def grey(value: int = 90) -> np.ndarray:
    return np.full((120, 160, 3), value, np.uint8)


def question(model: str, **kw: object) -> Question:
    return Question(prompt="Is anyone there?", schema=SCHEMA, model=model, **kw)  # type: ignore[arg-type]


def test_request_shape_image_and_window() -> None:
    one = build_request(question("m"), ["s1"], ["lobby"], "m").model_dump(exclude_none=True)
    assert one["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": SCHEMA, "strict": True}}
    assert one["max_tokens"] == 300
    user = one["messages"][-1]["content"]
    assert user[0] == {"type": "text", "text": "Is anyone there?"}
    assert user[1] == {"type": "image_url", "image_url": {"url": "ovs://streams/s1?frame_index=-1"}}
    two = build_request(question("m", window_ms=10_000, max_fps=2), ["s1", "s2"], ["a", "b"],
                        "m").model_dump(exclude_none=True)
    parts = two["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "text", "video_url", "text", "video_url"]
    assert parts[1]["text"] == "Camera a:"
    assert parts[2]["video_url"]["url"] == "ovs://streams/s1?start_offset_ms=-10000&max_fps=2"
    # A sub-millisecond window still counts back from now: start_offset_ms=0 would be the
    # oldest retained frame.
    tiny = build_request(question("m", window_ms=0), ["s1"], ["a"], "m")
    assert tiny.model_dump(exclude_none=True)["messages"][-1]["content"][-1]["video_url"] == {
        "url": "ovs://streams/s1?start_offset_ms=-1"}


@pytest.mark.parametrize(("text", "ok"), [
    ('{"person_present": true, "people": 2}', True),
    ('```json\n{"person_present": false, "people": 0}\n```', True),
    ('{"person_present": "yes", "people": 2}', False),
    ('{"person_present": true}', False),
    ('{"person_present": true, "people": 1, "extra": 1}', False),
    ("[1, 2]", False),
    ("no JSON here", False),
])
def test_parse_answer(text: str, ok: bool) -> None:
    data, error = parse_answer(text, SCHEMA)
    assert (data is not None) == ok and (error is None) == ok


async def test_local_vision_answers_the_schema(env) -> None:
    e = env()
    sid = e.stream_with_frames([grey()] * 3)
    answer = await ask(e.client, question("local/vision"), [sid], ["lobby"])
    assert answer.valid and answer.data == {"person_present": False, "people": 0}
    assert answer.urls == [f"ovs://streams/{sid}?frame_index=-1"]
    assert answer.prompt_tokens > 0 and answer.model == "local/vision"


async def test_one_repair_round_then_valid(env) -> None:
    model = ScriptedModel("m", "sure, nobody", '{"person_present": false, "people": 0}')
    e = env(model)
    sid = e.stream_with_frames([grey()])
    answer = await ask(e.client, question("m"), [sid], ["lobby"])
    assert answer.valid and answer.repaired
    assert len(model.requests) == 2
    repair = model.requests[1].messages
    assert repair[-2].role == "assistant" and repair[-2].text == "sure, nobody"
    assert "not valid" in repair[-1].text


async def test_invalid_after_repair_is_recorded_not_raised(env) -> None:
    model = ScriptedModel("m", '{"person_present": 1, "people": 0}')
    e = env(model)
    sid = e.stream_with_frames([grey()])
    answer = await ask(e.client, question("m"), [sid], ["lobby"])
    assert not answer.valid and answer.error and "person_present" in answer.error
    assert len(model.requests) == 2


async def test_fallback_model_after_the_retry_budget(env) -> None:
    down = ScriptedModel("big", ChatProblem(503, "loading", type="provider_error",
                                            code="model_unavailable"))
    spare = ScriptedModel("small", '{"person_present": true, "people": 1}')
    e = env(down, spare)
    sid = e.stream_with_frames([grey()])
    answer = await ask(e.client, question("big", fallback_models=("small",)), [sid], ["x"])
    assert answer.model == "small" and answer.fallbacks_used == ["big"]
    assert len(down.requests) == 3  # the client's retry budget for 503


async def test_all_models_failing(env) -> None:
    e = env(ScriptedModel("m", ChatProblem(500, "boom", type="internal_error", code="x")))
    sid = e.stream_with_frames([grey()])
    with pytest.raises(ModelsExhausted):
        await ask(e.client, question("m", fallback_models=("nope",)), [sid], ["x"])


async def test_stream_problems_are_not_model_failures(env) -> None:
    model = ScriptedModel("m", json.dumps({"person_present": False, "people": 0}))
    e = env(model)
    with pytest.raises(StreamNotReady):
        await ask(e.client, question("m"), ["no-such-stream"], ["x"])
    empty = e.server.registry.create(e.server.owner_of(f"Bearer {KEY}"))
    with pytest.raises(StreamNotReady):
        await ask(e.client, question("m"), [empty.id], ["x"])
    assert model.requests == []
