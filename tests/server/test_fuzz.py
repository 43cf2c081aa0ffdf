"""Fuzzing: the ovs:// parser and the chat endpoint never fail with anything but a clear 4xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.clock import ManualClock
from watcher.errors import RefError
from watcher.overshoot.refs import parse_ref
from watcher.server.app import create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

API_KEY = "ovs_fuzz_key"
BASE = "http://testserver/v1beta"
KEYS = ["frame_index", "timestamp_ms", "offset_ms", "tolerance_ms", "direction",
        "start_frame_index", "start_timestamp_ms", "start_offset_ms", "end_frame_index",
        "end_timestamp_ms", "end_offset_ms", "max_fps", "bogus", ""]
VALUES = st.one_of(
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["nearest", "forward", "backward", "", "-", "+1", "1e3", "%00", "0x10"]),
    st.text(max_size=12),
)
QUERY = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=5).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
URLS = st.one_of(
    st.text(max_size=80),
    st.builds(lambda sid, q: f"ovs://streams/{sid}?{q}",
              st.sampled_from(["STREAM", "nope", "", "a/b", "%2F"]), QUERY),
)


@given(url=URLS, part=st.sampled_from(["image_url", "video_url"]))
@settings(max_examples=400, deadline=None)
def test_parser_raises_only_ref_errors(url: str, part: str) -> None:
    try:
        parse_ref(url, part)  # type: ignore[arg-type]
    except RefError as exc:
        assert exc.status == 422
        assert exc.code in {"stream_url_invalid", "query_param_invalid"}


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def chat_bodies(stream_id: str) -> st.SearchStrategy[object]:
    part = st.one_of(
        st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=20)),
        st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}},
                  URLS.map(lambda u: u.replace("STREAM", stream_id))),
        st.builds(lambda u: {"type": "video_url", "video_url": {"url": u}},
                  URLS.map(lambda u: u.replace("STREAM", stream_id))),
        JSONISH,
    )
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "robot"]),
         "content": st.one_of(st.text(max_size=10), st.lists(part, max_size=3), JSONISH)})
    return st.one_of(
        st.fixed_dictionaries({
            "model": st.sampled_from(["local/frames", "nope", ""]),
            "messages": st.lists(message, max_size=3),
        }, optional={"response_format": JSONISH, "max_tokens": JSONISH, "stream": JSONISH}),
        JSONISH,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_chat_never_answers_5xx(data: st.DataObject, push_frames_sync: Callable) -> None:
    app, stream_id = push_frames_sync
    body = data.draw(chat_bodies(stream_id))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.post("/chat/completions", content=json.dumps(body),
                                     headers={"authorization": f"Bearer {API_KEY}",
                                              "content-type": "application/json"})

    response = asyncio.run(call())
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        payload = response.json()
        assert ("detail" in payload and "error" in payload["detail"]) or (
            payload.get("error") == "validation_error"), payload


@pytest.fixture(scope="module")
def push_frames_sync() -> tuple[FastAPI, str]:
    """One app with a 3-second stream, shared by every example."""
    clock = ManualClock()
    app = create_app(ServerSettings(api_keys=[API_KEY]), clock=clock, backends=[FramesModel()])
    server = app.state.server
    stream = server.registry.create(server.owner_of(f"Bearer {API_KEY}"))
    for _ in range(30):
        server.registry.add_frame(stream, b"\xff\xd8jpeg")
        clock.advance(0.1)
    return app, stream.id
