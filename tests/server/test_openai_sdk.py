"""The official ``openai`` SDK against the embedded server over real HTTP on loopback.

Models, chat, streaming (with ``stream_options.include_usage``), structured
outputs, and one test per error class: the SDK must see each error's message,
``code`` and ``type``, as it would from OpenAI itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import openai
import pytest
from pydantic import BaseModel
from support.asgi import serve_asgi
from support.frames import frame_pusher
from support.upstream import FakeUpstream, Reply, serve_fake_upstream

from watcher.clock import ManualClock
from watcher.overshoot.refs import frame_url, window_url
from watcher.server.app import EmbeddedServer, create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.backends.upstream import Upstream, UpstreamSettings
from watcher.server.backends.vision import VisionModel
from watcher.server.settings import ServerSettings

KEY = "ovs-sdk-test-key"
OTHER_KEY = "ovs-sdk-other-key"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass
class Served:
    server: EmbeddedServer
    upstream: FakeUpstream
    base_url: str
    push: Callable[..., None]

    def sdk(self, key: str = KEY) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0,
                                  timeout=30)


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    clock = ManualClock()
    async with serve_fake_upstream() as fake:
        ready = Upstream(UpstreamSettings(base_url=fake.base_url, models={"qwen": "vlm"}))
        loading = Upstream(UpstreamSettings(base_url=fake.base_url, models={"big": "vlm-72b"},
                                            probe=True))
        gone = Upstream(UpstreamSettings(base_url="http://127.0.0.1:9/v1",
                                         models={"gone": "x"}, probe=True,
                                         probe_timeout_seconds=2))
        backends = [FramesModel(), VisionModel(), *ready.models(), *loading.models(),
                    *gone.models()]
        app = create_app(ServerSettings(api_keys=[KEY, OTHER_KEY]), clock=clock,
                         backends=backends)
        server: EmbeddedServer = app.state.server
        async with serve_asgi(app) as root:
            yield Served(server, fake, f"{root}/v1beta", frame_pusher(server, clock))


async def new_stream(served: Served, frames: int = 5, key: str = KEY) -> str:
    async with served.sdk(key) as sdk:
        response = await sdk.post("/streams", cast_to=object, body={})
    stream_id = response["id"]  # type: ignore[index]
    served.push(stream_id, frames)
    return stream_id


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


async def test_models_lists_ready_and_loading_and_leaves_unhealthy_out(served: Served) -> None:
    served.upstream.models_status = 503
    async with served.sdk() as sdk:
        models = {m.id: m for m in (await sdk.models.list()).data}
    assert set(models) == {"local/frames", "local/vision", "qwen", "big"}
    statuses = {name: m.model_extra["status"] for name, m in models.items()}  # type: ignore[index]
    assert statuses == {"local/frames": "ready", "local/vision": "ready", "qwen": "ready",
                        "big": "loading"}
    assert all(m.object == "model" and m.owned_by for m in models.values())


async def test_chat_completion_through_the_sdk(served: Served) -> None:
    stream_id = await new_stream(served)
    async with served.sdk() as sdk:
        completion = await sdk.chat.completions.create(model="local/frames", messages=[{
            "role": "user", "content": [{"type": "text", "text": "which frames?"},
                                        image(frame_url(stream_id, frame_index=-1))]}])
    assert completion.object == "chat.completion" and completion.model == "local/frames"
    assert json.loads(completion.choices[0].message.content or "") == {"parts": [
        {"type": "image_url", "stream_id": stream_id,
         "frames": [{"frame_index": 4, "timestamp_ms": 800}]}]}
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens >= 200


async def test_streaming_sends_usage_last_when_asked(served: Served) -> None:
    served.upstream.then(Reply(kind="sse", chunks=("a person ", "at the ", "door"),
                               usage={"prompt_tokens": 321, "completion_tokens": 7}))
    async with served.sdk() as sdk:
        stream = await sdk.chat.completions.create(
            model="qwen", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "who is there?"}])
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a person at the door"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens,
            last.usage.total_tokens) == (321, 7, 328)
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "stop"
    assert served.upstream.last["json"]["stream_options"] == {"include_usage": True}


async def test_streaming_a_local_model_estimates_usage(served: Served) -> None:
    async with served.sdk() as sdk:
        stream = await sdk.chat.completions.create(
            model="local/frames", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hi"}])
        chunks = [chunk async for chunk in stream]
        plain = await sdk.chat.completions.create(
            model="local/frames", stream=True, messages=[{"role": "user", "content": "hi"}])
        plain_chunks = [chunk async for chunk in plain]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    assert all(c.choices and c.usage is None for c in plain_chunks)  # no usage chunk unasked


class Scene(BaseModel):
    brightness: float
    people: int


async def test_structured_output_with_a_json_schema(served: Served) -> None:
    stream_id = await new_stream(served, frames=3)
    async with served.sdk() as sdk:
        parsed = await sdk.chat.completions.parse(
            model="local/vision", response_format=Scene,
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "how bright is it, how many people?"},
                image(frame_url(stream_id, frame_index=-1))]}])
    scene = parsed.choices[0].message.parsed
    assert isinstance(scene, Scene)
    assert scene.brightness == pytest.approx(127 / 255, abs=0.02)  # the pushed grey frames
    assert scene.people == 0


async def test_json_schema_goes_upstream_unchanged(served: Served) -> None:
    served.upstream.then(Reply(content='{"brightness": 0.5, "people": 2}'))
    async with served.sdk() as sdk:
        parsed = await sdk.chat.completions.parse(
            model="qwen", response_format=Scene,
            messages=[{"role": "user", "content": "describe"}])
    assert parsed.choices[0].message.parsed == Scene(brightness=0.5, people=2)
    sent = served.upstream.last["json"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Scene"
    assert sent["json_schema"]["strict"] is True
    assert set(sent["json_schema"]["schema"]["properties"]) == {"brightness", "people"}


async def _error(served: Served, key: str = KEY, **request: object) -> openai.APIStatusError:
    async with served.sdk(key) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            await sdk.chat.completions.create(**request)  # type: ignore[call-overload]
    return caught.value


def _assert_error(error: openai.APIStatusError, cls: type, status: int, code: str,
                  type_: str, words: str) -> None:
    assert isinstance(error, cls), (type(error), error)
    assert error.status_code == status
    assert error.code == code and error.type == type_
    assert words in error.message, error.message
    assert f"Error code: {status} - " in error.message  # the SDK found the message


HI = [{"role": "user", "content": "hi"}]


async def test_400_unknown_model(served: Served) -> None:
    error = await _error(served, model="no/such", messages=HI)
    _assert_error(error, openai.BadRequestError, 400, "model_unavailable", "validation_error",
                  "unknown model 'no/such'")


async def test_401_unknown_key(served: Served) -> None:
    error = await _error(served, key="ovs-wrong", model="local/frames", messages=HI)
    _assert_error(error, openai.AuthenticationError, 401, "unauthorized",
                  "authentication_error", "missing or unknown API key")


async def test_403_another_keys_stream(served: Served) -> None:
    stream_id = await new_stream(served, key=OTHER_KEY)
    error = await _error(served, model="local/frames", messages=[
        {"role": "user", "content": [image(frame_url(stream_id, frame_index=-1))]}])
    _assert_error(error, openai.PermissionDeniedError, 403, "stream_unauthorized",
                  "stream_error", "belongs to another API key")


async def test_404_unknown_stream(served: Served) -> None:
    url = frame_url("00000000-0000-4000-8000-000000000000", frame_index=-1)
    error = await _error(served, model="local/frames",
                         messages=[{"role": "user", "content": [image(url)]}])
    _assert_error(error, openai.NotFoundError, 404, "stream_not_found", "stream_error",
                  "not found")


async def test_422_reference_errors(served: Served) -> None:
    stream_id = await new_stream(served)
    error = await _error(served, model="local/frames", messages=[
        {"role": "user", "content": [image(frame_url(stream_id, frame_index=99))]}])
    _assert_error(error, openai.UnprocessableEntityError, 422, "frame_not_yet_produced",
                  "stream_error", "frame 99 has not been produced yet")
    window = window_url(stream_id, start_frame_index=3, end_frame_index=2)
    error = await _error(served, model="local/frames", messages=[
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": window}}]}])
    assert isinstance(error, openai.UnprocessableEntityError)
    assert error.code == "segment_invalid" and error.type
    assert f"Error code: 422 - {error.body['message']}" == error.message  # type: ignore[index]


async def test_422_request_validation_names_the_field(served: Served) -> None:
    error = await _error(served, model="local/frames",
                         messages=[{"role": "robot", "content": "hi"}])
    _assert_error(error, openai.UnprocessableEntityError, 422, "request_invalid",
                  "validation_error", "messages.0.role: Input should be")
    assert error.param == "messages.0.role"


async def test_429_rate_limited_upstream(served: Served) -> None:
    served.upstream.then(Reply(kind="status", status=429, body="slow down",
                               headers={"retry-after": "3"}))
    error = await _error(served, model="qwen", messages=HI)
    _assert_error(error, openai.RateLimitError, 429, "upstream_http_429", "rate_limit_error",
                  "rate limiting")
    assert error.response.headers["retry-after"] == "3"


async def test_5xx_upstream_errors(served: Served) -> None:
    served.upstream.then(Reply(kind="status", status=503, body="loading"),
                         Reply(kind="status", status=500, body="boom"))
    error = await _error(served, model="qwen", messages=HI)
    _assert_error(error, openai.InternalServerError, 503, "upstream_http_503",
                  "upstream_error", "unavailable")
    error = await _error(served, model="qwen", messages=HI)
    _assert_error(error, openai.InternalServerError, 502, "upstream_http_500",
                  "upstream_error", "answered HTTP 500")


async def test_an_error_while_streaming_reaches_the_sdk(served: Served) -> None:
    served.upstream.then(Reply(kind="status", status=503, body="loading"))
    async with served.sdk() as sdk:
        stream = await sdk.chat.completions.create(model="qwen", stream=True, messages=HI)
        with pytest.raises(openai.APIError) as caught:
            async for _ in stream:
                pass
    assert "unavailable" in caught.value.message
    assert caught.value.code == "upstream_http_503"
