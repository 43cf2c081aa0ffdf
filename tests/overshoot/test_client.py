"""The Overshoot client against the real embedded server (ASGI) and scripted transports."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING

import httpx
import pytest
from support.camera import MjpegCamera

from watcher.clock import ManualClock
from watcher.errors import (
    APIError,
    AuthenticationError,
    BillingError,
    NotFoundError,
    OvershootError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnprocessableError,
)
from watcher.media.testsrc import SyntheticScene
from watcher.overshoot.client import (
    MAX_ERROR_BODY,
    FirstFrameTimeoutError,
    OvershootClient,
    StreamEndedError,
    error_from_response,
    parse_retry_after,
)
from watcher.overshoot.models import (
    ChatMessage,
    ChatRequest,
    ImageUrlPart,
    StreamSource,
    VideoUrlPart,
)
from watcher.overshoot.refs import frame_url, window_url
from watcher.server.app import EmbeddedServer

if TYPE_CHECKING:  # the conftest beside this file; not importable at run time
    from conftest import FakeSleep, Script

MakeClient = Callable[[str | None], OvershootClient]
Scripted = Callable[..., tuple[OvershootClient, "Script"]]


def ask(*parts: str | ImageUrlPart | VideoUrlPart, **options: object) -> ChatRequest:
    return ChatRequest(model="local/frames", messages=[ChatMessage.user(*parts)], **options)


def ok(body: object, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def stream_problem(status: int, detail: str = "nope", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"detail": detail}, headers=headers)


def chat_problem(status: int, code: str, type_: str = "stream_error",
                 **headers: str) -> httpx.Response:
    body = {"detail": {"error": {"message": f"failed: {code}", "type": type_, "code": code}}}
    return httpx.Response(status, json=body, headers=headers)


CREATED = {"id": "s1", "state": "active", "expires_at_ms": 1, "ttl_seconds": 45,
           "publish": {"type": "livekit", "url": "wss://lk", "token": "jwt-secret-token"}}
KEPT = {"id": "s1", "expires_at_ms": 2, "ttl_seconds": 45, "stream_time_ms": 10,
        "publish": None}
COMPLETION = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


# -- against the embedded server ------------------------------------------------
async def test_list_models_needs_no_key(make_client: MakeClient) -> None:
    models = await make_client(None).list_models()
    assert models.object == "list"
    assert [m.id for m in models.data] == ["local/frames"]
    assert models.data[0].status == "ready" and models.data[0].owned_by
    assert models.ready_ids() == ["local/frames"]


async def test_stream_lifecycle(client: OvershootClient, clock: ManualClock,
                                push_frames: Callable[..., None]) -> None:
    created = await client.create_stream()
    assert created.state == "active" and created.ttl_seconds == 45
    assert created.publish is not None and created.publish.type == "whip"
    assert created.publish.url.endswith(f"/v1beta/streams/{created.id}/whip")
    assert created.publish.token and created.publish.token not in repr(created)
    sid = created.id

    status = await client.get_stream(sid)
    assert status.active and not status.has_frames
    assert status.last_frame_at_ms is None and status.last_frame_index is None
    assert status.created_at_ms == clock.now_ms() and status.audio is False

    push_frames(sid, 3)
    status = await client.get_stream(sid)
    assert status.has_frames
    assert (status.last_frame_index, status.retained_frame_count) == (2, 3)
    assert status.first_available_frame_index == 0 and status.stream_time_ms == 400

    assert [s.id for s in await client.list_streams()] == [sid]

    clock.advance(10)
    kept = await client.keepalive(sid)
    assert kept.id == sid and kept.expires_at_ms == clock.now_ms() + 45_000
    assert kept.publish is not None and kept.publish.token != created.publish.token

    deleted = await client.delete_stream(sid)
    assert (deleted.id, deleted.deleted) == (sid, True)
    ended = await client.get_stream(sid)
    assert (ended.state, ended.end_reason) == ("ended", "deleted")
    assert ended.ended_at_ms == clock.now_ms()
    assert (await client.delete_stream(sid)).deleted  # idempotent

    with pytest.raises(NotFoundError) as caught:
        await client.keepalive(sid)
    assert caught.value.status == 404 and "ended" in caught.value.message


async def test_chat_with_frame_and_window(client: OvershootClient,
                                          push_frames: Callable[..., None]) -> None:
    sid = (await client.create_stream()).id
    push_frames(sid, 10, interval_ms=500)
    request = ask("what now?",
                  ImageUrlPart.of(frame_url(sid, frame_index=-1)),
                  VideoUrlPart.of(window_url(sid, start_offset_ms=-2000, max_fps=1)),
                  max_tokens=50)
    completion = await client.chat(request)
    assert completion.object == "chat.completion" and completion.model == "local/frames"
    assert completion.choices[0].finish_reason == "stop"
    parts = json.loads(completion.text)["parts"]
    assert parts[0] == {"type": "image_url", "stream_id": sid,
                        "frames": [{"frame_index": 9, "timestamp_ms": 4500}]}
    assert [f["frame_index"] for f in parts[1]["frames"]] == [5, 7, 9]
    assert completion.usage is not None and completion.usage.prompt_tokens >= 4 * 200
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)


async def test_wait_for_first_frame(client: OvershootClient, sleeps: FakeSleep,
                                    push_frames: Callable[..., None]) -> None:
    sid = (await client.create_stream()).id
    with pytest.raises(FirstFrameTimeoutError, match="no frame after 2 s") as caught:
        await client.wait_for_first_frame(sid, timeout=2, poll_interval=0.5)
    assert isinstance(caught.value, TimeoutError)
    assert sleeps.delays == [0.5, 0.5, 0.5, 0.5]

    push_frames(sid, 1)
    status = await client.wait_for_first_frame(sid, timeout=2, poll_interval=0.5)
    assert status.last_frame_index == 0

    other = (await client.create_stream()).id
    await client.delete_stream(other)
    with pytest.raises(StreamEndedError, match="deleted"):
        await client.wait_for_first_frame(other, timeout=2)


async def test_wrong_key_is_401(make_client: MakeClient) -> None:
    client = make_client("ovs_not_a_known_key_xyz")
    with pytest.raises(AuthenticationError) as caught:
        await client.create_stream()
    assert caught.value.status == 401 and caught.value.message == "missing or unknown API key"
    with pytest.raises(AuthenticationError) as caught:
        await client.chat(ask("hi"))
    assert (caught.value.code, caught.value.type) == ("unauthorized", "authentication_error")


async def test_other_keys_stream_is_403(client: OvershootClient, make_client: MakeClient,
                                        push_frames: Callable[..., None],
                                        other_key: str) -> None:
    sid = (await client.create_stream()).id
    push_frames(sid, 2)
    other = make_client(other_key)
    for call in (other.get_stream, other.keepalive, other.delete_stream):
        with pytest.raises(PermissionDeniedError) as caught:
            await call(sid)
        assert caught.value.status == 403
    with pytest.raises(PermissionDeniedError) as caught:
        await other.chat(ask("hi", ImageUrlPart.of(frame_url(sid, frame_index=-1))))
    assert (caught.value.code, caught.value.type) == ("stream_unauthorized", "stream_error")
    assert (await client.get_stream(sid)).active


async def test_unknown_stream_is_404(client: OvershootClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.get_stream("no-such-stream")
    assert caught.value.message == "stream not found" and caught.value.code is None
    with pytest.raises(NotFoundError) as caught:
        await client.chat(ask("hi", ImageUrlPart.of(frame_url("nope", frame_index=-1))))
    assert caught.value.code == "stream_not_found"


async def test_chat_422_codes(client: OvershootClient, sleeps: FakeSleep) -> None:
    sid = (await client.create_stream()).id
    with pytest.raises(UnprocessableError) as caught:
        await client.chat(ask("now?", ImageUrlPart.of(frame_url(sid, frame_index=-1))))
    error = caught.value
    assert (error.status, error.code, error.type) == (422, "frame_not_yet_produced",
                                                      "stream_error")
    assert "frame_not_yet_produced" in str(error)

    bad = f"ovs://streams/{sid}?frame_index=1&offset_ms=-1"
    with pytest.raises(UnprocessableError) as caught:
        await client.chat(ask("now?", ImageUrlPart.of(bad)))
    assert (caught.value.code, caught.value.type) == ("query_param_invalid", "validation_error")
    error_object = {"message": caught.value.message, "type": "validation_error",
                    "code": "query_param_invalid"}
    assert caught.value.body == {"detail": {"error": error_object}, "error": error_object}

    with pytest.raises(UnprocessableError) as caught:
        await client.chat(ChatRequest(model="no/such", messages=[ChatMessage.user("hi")]))
    assert (caught.value.status, caught.value.code) == (400, "model_unavailable")
    assert sleeps.delays == []


async def test_validation_envelope(client: OvershootClient) -> None:
    with pytest.raises(UnprocessableError) as caught:
        await client.chat(ask("hi", max_tokens=0))
    error = caught.value
    assert (error.status, error.type, error.code) == (422, "validation_error", "request_invalid")
    assert error.message.startswith("max_tokens:")
    assert isinstance(error.body, dict) and error.body["details"][0]["loc"][-1] == "max_tokens"


async def test_create_with_source_sends_it(client: OvershootClient,
                                           server: EmbeddedServer) -> None:
    camera = MjpegCamera(SyntheticScene(width=160, height=120, fps=10, noise=0))
    camera.start()
    try:
        source = StreamSource(type="hls", url=camera.url.replace("//", "//user:pw@"))
        assert "pw@" not in repr(source)
        created = await client.create_stream(source)
        assert created.publish is None  # the server pulls the camera itself
        assert created.source == {"type": "hls"}
        pulled = server.registry.get_active(created.id)
        assert pulled is not None and pulled.source is not None
        assert pulled.source.url == source.url
        status = await client.get_stream(created.id)
        assert isinstance(status.last_pull, int) and status.pull is not None
        assert status.source == {"type": "hls"}
        await client.delete_stream(created.id)  # stops the pull
    finally:
        camera.stop()
    server.settings = server.settings.model_copy(update={"pull_connect_timeout_seconds": 0.3})
    with pytest.raises(UnprocessableError, match=r"Could not connect to source url within 0\.3 s"):
        await client.create_stream(source)  # the camera is off now


# -- the retry budget ---------------------------------------------------------
async def test_create_retries_503_then_succeeds(scripted: Scripted, sleeps: FakeSleep,
                                                api_key: str) -> None:
    client, script = scripted(stream_problem(503, "draining"), stream_problem(503, "draining"),
                              ok(CREATED, 201))
    created = await client.create_stream()
    assert created.id == "s1" and created.publish is not None
    assert created.publish.type == "livekit" and "jwt-secret-token" not in repr(created)
    assert sleeps.delays == [1, 2]
    assert len(script.requests) == 3
    assert json.loads(script.requests[0].content) == {}
    assert script.requests[0].headers["authorization"] == f"Bearer {api_key}"


async def test_create_gives_up_after_three_503(scripted: Scripted, sleeps: FakeSleep) -> None:
    client, script = scripted(*(stream_problem(503, "draining") for _ in range(3)))
    with pytest.raises(ServiceUnavailableError, match="draining"):
        await client.create_stream(StreamSource(type="hls", url="https://cam/x.m3u8"))
    assert sleeps.delays == [1, 2]
    assert json.loads(script.requests[0].content) == {
        "source": {"type": "hls", "url": "https://cam/x.m3u8"}}


@pytest.mark.parametrize("failure", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"),
                                     httpx.RemoteProtocolError("reset")])
async def test_create_never_blind_retried(scripted: Scripted, sleeps: FakeSleep,
                                          failure: Exception) -> None:
    client, script = scripted(failure)
    with pytest.raises(TransportError) as caught:
        await client.create_stream()
    assert caught.value.__cause__ is failure
    assert "POST /streams" in str(caught.value)
    assert len(script.requests) == 1 and sleeps.delays == []


@pytest.mark.parametrize("status", [400, 402, 409, 500])
async def test_create_other_errors_not_retried(scripted: Scripted, sleeps: FakeSleep,
                                               status: int) -> None:
    client, script = scripted(stream_problem(status))
    with pytest.raises(APIError) as caught:
        await client.create_stream()
    assert caught.value.status == status
    assert len(script.requests) == 1 and sleeps.delays == []


async def test_keepalive_503_three_times_raises(scripted: Scripted, sleeps: FakeSleep) -> None:
    client, script = scripted(*(stream_problem(503) for _ in range(3)))
    with pytest.raises(ServiceUnavailableError):
        await client.keepalive("s1")
    assert len(script.requests) == 3 and sleeps.delays == [1, 1]
    assert script.requests[0].url.path == "/v1beta/streams/s1/keepalive"


async def test_keepalive_retries_network_errors(scripted: Scripted, sleeps: FakeSleep) -> None:
    client, _ = scripted(httpx.ConnectError("down"), httpx.ReadTimeout("slow"), ok(KEPT))
    kept = await client.keepalive("s1")
    assert kept.stream_time_ms == 10 and kept.publish is None
    assert sleeps.delays == [1, 1]


async def test_keepalive_404_not_retried(scripted: Scripted, sleeps: FakeSleep) -> None:
    client, script = scripted(stream_problem(404, "stream has ended (expired)"))
    with pytest.raises(NotFoundError):
        await client.keepalive("s1")
    assert len(script.requests) == 1 and sleeps.delays == []


async def test_get_and_delete_retry_like_keepalive(scripted: Scripted,
                                                   sleeps: FakeSleep) -> None:
    client, _ = scripted(httpx.ReadError("reset"), ok({"id": "s1", "state": "active",
                                                       "future_field": 1}),
                         stream_problem(503), ok({"id": "s1", "deleted": True}))
    assert (await client.get_stream("s1")).state == "active"
    assert (await client.delete_stream("s1")).deleted
    assert sleeps.delays == [1, 1]


async def test_chat_honours_retry_after(scripted: Scripted, sleeps: FakeSleep) -> None:
    client, script = scripted(chat_problem(429, "rate_limited", "rate_limit_error",
                                           **{"retry-after": "3"}),
                              ok(COMPLETION))
    completion = await client.chat(ask("hi"))
    assert completion.text == "yes"
    assert sleeps.delays == [3]
    assert json.loads(script.requests[0].content) == {
        "model": "local/frames",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


async def test_chat_backoff_beats_short_retry_after(scripted: Scripted,
                                                    sleeps: FakeSleep) -> None:
    client, _ = scripted(chat_problem(429, "r", **{"retry-after": "0.1"}),
                         chat_problem(429, "r"), chat_problem(503, "model_unavailable"))
    with pytest.raises(ServiceUnavailableError) as caught:
        await client.chat(ask("hi"))
    assert caught.value.code == "model_unavailable"
    assert sleeps.delays == [0.5, 1]


async def test_chat_long_retry_after_is_raised(scripted: Scripted, sleeps: FakeSleep) -> None:
    client, _ = scripted(chat_problem(429, "r", "rate_limit_error", **{"retry-after": "120"}))
    with pytest.raises(RateLimitError) as caught:
        await client.chat(ask("hi"))
    assert caught.value.retry_after == 120 and caught.value.type == "rate_limit_error"
    assert sleeps.delays == []


@pytest.mark.parametrize(("status", "error"), [(400, UnprocessableError),
                                               (401, AuthenticationError),
                                               (402, BillingError), (404, NotFoundError),
                                               (422, UnprocessableError)])
async def test_chat_client_errors_not_retried(scripted: Scripted, sleeps: FakeSleep,
                                              status: int, error: type[APIError]) -> None:
    client, script = scripted(chat_problem(status, "some_code"))
    with pytest.raises(error) as caught:
        await client.chat(ask("hi"))
    assert type(caught.value) is error and caught.value.code == "some_code"
    assert len(script.requests) == 1 and sleeps.delays == []


async def test_chat_network_errors_retried(scripted: Scripted, sleeps: FakeSleep) -> None:
    client, _ = scripted(httpx.ReadTimeout("slow"), httpx.ConnectError("down"), ok(COMPLETION))
    assert (await client.chat(ask("hi"))).text == "yes"
    assert sleeps.delays == [0.5, 1]

    sleeps.delays.clear()
    client, script = scripted(*(httpx.ReadTimeout("slow") for _ in range(3)))
    with pytest.raises(TransportError, match="ReadTimeout"):
        await client.chat(ask("hi"))
    assert len(script.requests) == 3 and sleeps.delays == [0.5, 1]


async def test_retries_logged_as_warnings(scripted: Scripted,
                                          caplog: pytest.LogCaptureFixture) -> None:
    client, _ = scripted(stream_problem(503, "ingest draining"), ok(CREATED, 201))
    with caplog.at_level(logging.WARNING, logger="watcher.overshoot.client"):
        await client.create_stream()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "POST /streams" in record.message and "ingest draining" in record.message
    assert "retry 1/2 in 1.0 s" in record.message


async def test_jitter_only_lengthens_delays(scripted: Scripted, sleeps: FakeSleep) -> None:
    client, _ = scripted(stream_problem(503), stream_problem(503), ok(CREATED, 201), jitter=0.5)
    await client.create_stream()
    assert 1 <= sleeps.delays[0] <= 1.5 and 2 <= sleeps.delays[1] <= 3


async def test_chat_rejects_sse(scripted: Scripted) -> None:
    client, script = scripted()
    with pytest.raises(ValueError, match="SSE"):
        await client.chat(ask("hi", stream=True))
    assert script.requests == []


# -- the error boundary -------------------------------------------------------
def test_error_mapping_by_status() -> None:
    def mapped(status: int, **kw: object) -> APIError:
        return error_from_response(httpx.Response(status, **kw))  # type: ignore[arg-type]

    assert type(mapped(402, json={"detail": "no credit"})) is BillingError
    assert type(mapped(500, json={"detail": {"error": {"message": "boom", "type":
                                                       "internal_error", "code": "x"}}})
                ) is ServerError
    assert type(mapped(502, text="<html>bad gateway</html>")) is ServerError
    assert type(mapped(503)) is ServiceUnavailableError
    assert type(mapped(409, json={"detail": "conflict"})) is APIError
    assert mapped(503).message == "Service Unavailable"
    openai = mapped(400, json={"error": {"message": "bad", "type": "invalid_request_error",
                                         "code": "x1"}})
    assert (openai.message, openai.type, openai.code) == ("bad", "invalid_request_error", "x1")
    fastapi = mapped(422, json={"detail": [{"loc": ["body"], "msg": "field required"}]})
    assert (fastapi.message, fastapi.type) == ("field required", "validation_error")


def test_error_body_is_bounded() -> None:
    huge = "x" * (MAX_ERROR_BODY * 4)
    error = error_from_response(httpx.Response(502, text=huge))
    assert isinstance(error.body, str) and len(error.body) == MAX_ERROR_BODY
    assert len(error.message) <= 500
    error = error_from_response(httpx.Response(500, json={"detail": huge}))
    assert isinstance(error.body, str) and len(error.body) == MAX_ERROR_BODY


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0 and parse_retry_after("nan") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (parse_retry_after(later) or 0) <= 30


async def test_malformed_success_is_an_overshoot_error(scripted: Scripted) -> None:
    client, _ = scripted(ok({"unexpected": True}), httpx.Response(200, text="not json"))
    with pytest.raises(OvershootError, match="unexpected 200 response"):
        await client.get_stream("s1")
    with pytest.raises(OvershootError, match="unexpected 200 response"):
        await client.list_models()


# -- secrets ------------------------------------------------------------------
async def test_key_never_in_repr_errors_or_logs(
        make_client: MakeClient, scripted: Scripted, push_frames: Callable[..., None],
        caplog: pytest.LogCaptureFixture, api_key: str, base_url: str) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(api_key)
    assert repr(client) == f"OvershootClient(base_url={base_url!r})"
    assert api_key not in str(client)

    errors: list[Exception] = []
    sid = (await client.create_stream()).id
    push_frames(sid, 2)
    await client.chat(ask("hi", ImageUrlPart.of(frame_url(sid, frame_index=-1))))
    kept = await client.keepalive(sid)
    for call in (lambda: make_client("ovs_wrong_key_123456").get_stream(sid),
                 lambda: client.keepalive("nope"),
                 lambda: client.chat(ask("x", ImageUrlPart.of(f"ovs://streams/{sid}")))):
        with pytest.raises(APIError) as caught:
            await call()
        errors.append(caught.value)

    # A server that echoes the key back does not get it into our messages either.
    echo, _ = scripted(stream_problem(401, f"bad key Bearer {api_key}"),
                       httpx.ConnectError(f"cannot connect with {api_key}"))
    for call in (lambda: echo.get_stream("s1"), echo.create_stream):
        with pytest.raises(OvershootError) as caught:
            await call()
        errors.append(caught.value)

    assert all(api_key not in str(e) and api_key not in repr(e) for e in errors)
    assert any(r.levelno == logging.DEBUG and "POST /chat/completions -> 200" in r.getMessage()
               for r in caplog.records)
    assert api_key not in caplog.text
    assert kept.publish is not None and kept.publish.token not in caplog.text


async def test_httpx_and_httpcore_logs_hold_no_key(caplog: pytest.LogCaptureFixture,
                                                   api_key: str) -> None:
    """Over a real socket httpcore logs its trace at DEBUG; no header value may appear."""
    body = json.dumps({"object": "list", "data": []}).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    tcp = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    caplog.set_level(logging.DEBUG)
    for noisy in ("httpx", "httpcore"):  # a CLI test may have quietened them
        caplog.set_level(logging.DEBUG, logger=noisy)
    try:
        async with OvershootClient(f"http://127.0.0.1:{port}/v1beta", api_key) as client:
            assert (await client.list_models()).data == []
    finally:
        tcp.close()
        await tcp.wait_closed()
    names = {r.name.split(".")[0] for r in caplog.records}
    assert {"httpx", "httpcore", "watcher"} <= names
    assert api_key not in caplog.text
