"""The upstream backend against a real fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import cv2
import numpy as np
import pytest
from support.upstream import FakeUpstream, Reply, serve_fake_upstream

from watcher.server.backends.base import ChatInput, ExternalImage, Message
from watcher.server.backends.upstream import Upstream, UpstreamModel, UpstreamSettings
from watcher.server.frames import StoredFrame
from watcher.server.problems import ChatProblem
from watcher.server.resolve import ResolvedMedia

API_KEY = "sk-test-very-secret-4f9a1c"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake(no_proxy: None) -> AsyncIterator[FakeUpstream]:
    async with serve_fake_upstream() as state:
        yield state


def _model(base_url: str, **kw: Any) -> tuple[Upstream, UpstreamModel]:
    settings = UpstreamSettings(
        base_url=base_url, api_key=API_KEY, models={"qwen": "vlm-upstream"}, **kw,
    )
    upstream = Upstream(settings)
    (model,) = upstream.models()
    return upstream, model


@pytest.fixture
async def qwen(fake: FakeUpstream) -> AsyncIterator[UpstreamModel]:
    upstream, model = _model(fake.base_url)
    yield model
    await upstream.aclose()


def _jpeg(value: int, size: int = 16) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((size, size, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def _chat(text: str = "what is happening?", *, raw: dict[str, Any] | None = None) -> ChatInput:
    return ChatInput(model="qwen", messages=[Message("user", [text])], raw=raw or {})


def _data(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


# -- a completion ----------------------------------------------------------------
async def test_frames_arrive_as_labelled_data_urls(fake: FakeUpstream, qwen: UpstreamModel) -> None:
    snap = StoredFrame(90, 30_000, _jpeg(10))
    clip = (StoredFrame(40, 12_000, _jpeg(50)), StoredFrame(42, 12_400, _jpeg(90)))
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    request = ChatInput(
        model="qwen",
        messages=[
            Message("system", ["answer in JSON"]),
            Message("user", [
                "compare",
                ResolvedMedia("image_url", "cam-a", "ovs://streams/cam-a?frame_index=-1", (snap,)),
                ResolvedMedia("video_url", "cam-b", "ovs://streams/cam-b?start_ms=0", clip),
                ExternalImage("https://example.com/x.jpg"),
            ]),
        ],
        response_format=schema,
        max_tokens=64,
        raw={"model": "qwen", "response_format": schema, "max_tokens": 64, "temperature": 0.1,
             "thread_id": "t-1", "stream": False},
    )
    completion = await qwen.complete(request)

    assert completion.content == "a person is at the door"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (321, 7)
    assert completion.finish_reason == "stop"
    sent = fake.last
    assert sent["headers"]["authorization"] == f"Bearer {API_KEY}"
    body = sent["json"]
    assert body["model"] == "vlm-upstream"
    assert body["response_format"] == schema
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.1
    assert "thread_id" not in body and "stream" not in body
    assert body["messages"][0] == {"role": "system", "content": "answer in JSON"}
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": _data(snap.jpeg)}},
        {"type": "text", "text": "[stream cam-b frame 40 at t=12.000s]"},
        {"type": "image_url", "image_url": {"url": _data(clip[0].jpeg)}},
        {"type": "text", "text": "[stream cam-b frame 42 at t=12.400s]"},
        {"type": "image_url", "image_url": {"url": _data(clip[1].jpeg)}},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.jpg"}},
    ]


async def test_missing_usage_is_estimated_and_labels_can_be_off(fake: FakeUpstream) -> None:
    upstream, model = _model(fake.base_url, frame_labels=False, jpeg_passthrough=False,
                             max_frame_side=8)
    fake.then(Reply(usage=None, content="ok"))
    clip = (StoredFrame(0, 0, _jpeg(50, 32)), StoredFrame(1, 500, _jpeg(90, 32)))
    request = ChatInput(model="qwen", messages=[Message("user", [
        "what?", ResolvedMedia("video_url", "cam", "ovs://streams/cam?start_ms=0", clip),
    ])])
    try:
        completion = await model.complete(request)
    finally:
        await upstream.aclose()
    assert completion.usage.prompt_tokens >= 2 * 200 and completion.usage.completion_tokens >= 1
    parts = fake.last["json"]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    jpeg = base64.b64decode(parts[1]["image_url"]["url"].split(",", 1)[1])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (8, 8)


async def test_stream_passes_deltas_through(fake: FakeUpstream, qwen: UpstreamModel) -> None:
    fake.then(Reply(kind="sse", chunks=("a ", "person", "")))
    pieces = [piece async for piece in qwen.stream(_chat())]
    assert pieces == ["a ", "person"]
    assert fake.last["json"]["stream"] is True


# -- errors ----------------------------------------------------------------------
async def test_http_error_carries_a_bounded_body(fake: FakeUpstream, qwen: UpstreamModel) -> None:
    fake.then(Reply(kind="status", status=500, body="x" * 10_000))
    with pytest.raises(ChatProblem) as info:
        await qwen.complete(_chat())
    problem = info.value
    assert (problem.status, problem.type, problem.code) == (502, "upstream_error",
                                                            "upstream_http_500")
    assert problem.upstream == {"provider": "127.0.0.1", "status": 500, "body": "x" * 2048}
    assert problem.body()["detail"]["error"]["upstream"]["status"] == 500


async def test_rate_limit_and_unavailable_keep_their_status(
    fake: FakeUpstream, qwen: UpstreamModel,
) -> None:
    fake.then(
        Reply(kind="status", status=429, body='{"error":"slow down"}',
              headers={"retry-after": "3"}),
        Reply(kind="status", status=503, body="loading"),
    )
    with pytest.raises(ChatProblem) as info:
        await qwen.complete(_chat())
    assert (info.value.status, info.value.type, info.value.code) == (
        429, "rate_limit_error", "upstream_http_429")
    assert info.value.headers == {"retry-after": "3"}
    with pytest.raises(ChatProblem) as info:
        await qwen.complete(_chat())
    assert (info.value.status, info.value.code) == (503, "upstream_http_503")
    assert info.value.upstream is not None and info.value.upstream["body"] == "loading"


async def test_timeout(fake: FakeUpstream) -> None:
    upstream, model = _model(fake.base_url, timeout_seconds=0.2)
    fake.then(Reply(kind="sleep", seconds=0.6))
    try:
        with pytest.raises(ChatProblem) as info:
            await model.complete(_chat())
    finally:
        await upstream.aclose()
    assert (info.value.status, info.value.code) == (504, "upstream_timeout")


async def test_nothing_listening(no_proxy: None) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    upstream, model = _model(f"http://127.0.0.1:{port}/v1", probe=True)
    try:
        with pytest.raises(ChatProblem) as info:
            await model.complete(_chat())
        assert await model.status() == "unavailable"
    finally:
        await upstream.aclose()
    assert (info.value.status, info.value.code) == (502, "upstream_request_failed")


@pytest.mark.parametrize("reply", [Reply(kind="malformed"), Reply(content=None)])
async def test_invalid_response(fake: FakeUpstream, qwen: UpstreamModel, reply: Reply) -> None:
    fake.then(reply)
    with pytest.raises(ChatProblem) as info:
        await qwen.complete(_chat())
    assert (info.value.status, info.value.code) == (502, "upstream_invalid_response")


# -- status and lifecycle --------------------------------------------------------
async def test_status_probe_is_cached(fake: FakeUpstream) -> None:
    upstream, model = _model(fake.base_url, probe=True)
    try:
        assert await model.status() == "ready"
        assert await model.status() == "ready"
        assert fake.model_gets == 1
    finally:
        await model.aclose()
        await upstream.aclose()  # closing twice is fine
    assert await model.status() == "unavailable"


async def test_models_share_one_client(fake: FakeUpstream) -> None:
    settings = UpstreamSettings(base_url=fake.base_url + "/", models={"a": "m1", "b": "m2"},
                                owned_by="ollama")
    upstream = Upstream(settings)
    a, b = upstream.models()
    try:
        assert (a.id, a.upstream_name, a.owned_by, b.id) == ("a", "m1", "ollama", "b")
        assert await a.status() == "ready" and fake.model_gets == 0
        await b.complete(ChatInput(model="b", messages=[Message("user", ["hi"])]))
    finally:
        await upstream.aclose()
    assert fake.last["json"]["model"] == "m2"
    assert "authorization" not in fake.last["headers"]


# -- the key stays secret --------------------------------------------------------
async def test_api_key_never_leaks(
    fake: FakeUpstream, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream, model = _model(fake.base_url)
    settings = upstream.settings
    assert API_KEY not in repr(settings) and API_KEY not in str(settings)
    assert API_KEY not in repr(upstream) and API_KEY not in repr(model)
    assert API_KEY not in settings.model_dump_json()
    fake.then(
        Reply(),
        Reply(kind="status", status=401, body=f"bad key Bearer {API_KEY}"),
        Reply(kind="status", status=429, body=f"key {API_KEY} is throttled"),
    )
    errors: list[ChatProblem] = []
    try:
        await model.complete(_chat())
        for _ in range(2):
            with pytest.raises(ChatProblem) as info:
                await model.complete(_chat())
            errors.append(info.value)
    finally:
        await upstream.aclose()
    assert fake.requests[-1]["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert errors[0].code == "upstream_http_401"
    for error in errors:
        assert API_KEY not in str(error) and API_KEY not in repr(error)
        assert API_KEY not in json.dumps(error.body())
    assert caplog.records
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
    assert API_KEY not in caplog.text
