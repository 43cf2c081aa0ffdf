"""The HTTP API of the embedded server: shapes, auth, leases, tombstones, envelopes."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from watcher.clock import ManualClock
from watcher.overshoot.refs import frame_url, window_url


async def create(client: httpx.AsyncClient) -> dict:
    response = await client.post("/streams")
    assert response.status_code == 201, response.text
    return response.json()


async def ask(client: httpx.AsyncClient, *urls: tuple[str, str], model: str = "local/frames",
              ) -> httpx.Response:
    content: list[dict] = [{"type": "text", "text": "which frames?"}]
    content += [{"type": kind, kind: {"url": url}} for kind, url in urls]
    return await client.post("/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": content}]})


async def test_models_need_no_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/models", headers={"authorization": ""})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == "local/frames"
    assert body["data"][0]["status"] == "ready"
    assert {"id", "object", "created", "owned_by", "status"} <= set(body["data"][0])


async def test_create_stream_shape(client: httpx.AsyncClient, clock: ManualClock) -> None:
    body = await create(client)
    assert body["state"] == "active"
    assert body["ttl_seconds"] == 45
    assert body["expires_at_ms"] == clock.now_ms() + 45_000
    publish = body["publish"]
    assert publish["type"] == "whip"
    assert publish["url"] == f"http://testserver/v1beta/streams/{body['id']}/whip"
    assert len(publish["token"]) >= 20


async def test_status_before_and_after_frames(client: httpx.AsyncClient,
                                              push_frames: Callable[..., None],
                                              clock: ManualClock) -> None:
    sid = (await create(client))["id"]
    status = (await client.get(f"/streams/{sid}")).json()
    assert status["last_frame_at_ms"] is None
    assert status["last_frame_index"] is None
    assert status["retained_frame_count"] == 0
    start = clock.now_ms()
    push_frames(sid, 26, 200)
    clock.advance(0.1)
    status = (await client.get(f"/streams/{sid}")).json()
    assert status["first_frame_at_ms"] == start
    assert status["last_frame_at_ms"] == start + 5000
    assert status["last_frame_index"] == 25
    assert status["first_available_frame_index"] == 0
    assert status["retained_frame_count"] == 26
    assert status["evicted_frame_count"] == 0
    assert status["stream_time_ms"] == 5100
    assert status["recent_fps"] == pytest.approx(5.0, abs=0.3)
    assert status["audio"] is False


async def test_lease_expires_without_keepalive(client: httpx.AsyncClient,
                                               clock: ManualClock) -> None:
    body = await create(client)
    sid = body["id"]
    clock.advance(44.9)
    assert (await client.get(f"/streams/{sid}")).json()["state"] == "active"
    clock.advance(0.2)
    status = (await client.get(f"/streams/{sid}")).json()
    assert status["state"] == "ended"
    assert status["end_reason"] == "expired"
    assert status["ended_at_ms"] == body["expires_at_ms"]
    response = await client.post(f"/streams/{sid}/keepalive")
    assert response.status_code == 404
    assert "detail" in response.json()
    clock.advance(61)  # past the tombstone window
    assert (await client.get(f"/streams/{sid}")).status_code == 404


async def test_keepalive_extends_and_rotates_token(client: httpx.AsyncClient,
                                                   clock: ManualClock) -> None:
    body = await create(client)
    sid = body["id"]
    for _ in range(5):  # five renewals 30 s apart outlive several TTLs
        clock.advance(30)
        renewed = (await client.post(f"/streams/{sid}/keepalive")).json()
        assert renewed["expires_at_ms"] == clock.now_ms() + 45_000
        assert renewed["ttl_seconds"] == 45
        assert renewed["publish"]["token"] != body["publish"]["token"]
        body = renewed
    assert (await client.get(f"/streams/{sid}")).json()["state"] == "active"


async def test_delete_is_idempotent(client: httpx.AsyncClient) -> None:
    sid = (await create(client))["id"]
    first = await client.delete(f"/streams/{sid}")
    second = await client.delete(f"/streams/{sid}")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"id": sid, "deleted": True}
    status = (await client.get(f"/streams/{sid}")).json()
    assert (status["state"], status["end_reason"]) == ("ended", "deleted")
    assert (await client.post(f"/streams/{sid}/keepalive")).status_code == 404


async def test_list_streams_shows_only_own(client: httpx.AsyncClient) -> None:
    mine = (await create(client))["id"]
    other = await client.post("/streams", headers={"authorization": "Bearer ovs_test_key_2"})
    listing = (await client.get("/streams")).json()
    assert [s["id"] for s in listing["data"]] == [mine]
    assert other.json()["id"] not in json.dumps(listing)


async def test_auth_and_ownership(client: httpx.AsyncClient,
                                  push_frames: Callable[..., None]) -> None:
    sid = (await create(client))["id"]
    push_frames(sid, 3)
    for headers in ({"authorization": ""}, {"authorization": "Bearer nope"},
                    {"authorization": "Basic abc"}):
        response = await client.get(f"/streams/{sid}", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"detail": "missing or unknown API key"}
    foreign = {"authorization": "Bearer ovs_test_key_2"}
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/keepalive")):
        response = await client.request(method, f"/streams/{sid}{path}", headers=foreign)
        assert response.status_code == 403
        assert set(response.json()) == {"detail"}
    response = await client.post("/chat/completions", headers=foreign, json={
        "model": "local/frames", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": frame_url(sid, frame_index=-1)}}]}]})
    assert response.status_code == 403
    assert response.json()["detail"]["error"]["code"] == "stream_unauthorized"
    chat_unauth = await client.post("/chat/completions", headers={"authorization": ""},
                                    json={"model": "local/frames", "messages": []})
    assert chat_unauth.status_code == 401
    assert chat_unauth.json()["detail"]["error"]["type"] == "authentication_error"


async def test_unknown_stream_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/streams/nope")).json() == {"detail": "stream not found"}
    response = await ask(client, ("image_url", frame_url("nope", frame_index=-1)))
    assert response.status_code == 404
    assert response.json()["detail"]["error"] == {
        "message": "stream nope not found", "type": "stream_error", "code": "stream_not_found"}


async def test_local_frames_answers_parts_in_order(client: httpx.AsyncClient,
                                                   push_frames: Callable[..., None]) -> None:
    a = (await create(client))["id"]
    b = (await create(client))["id"]
    push_frames(a, 11, 100)
    push_frames(b, 11, 100)
    response = await ask(client, ("image_url", frame_url(a, frame_index=-1)),
                         ("video_url", window_url(b, start_offset_ms=-500, max_fps=10)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "local/frames"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["total_tokens"] == (body["usage"]["prompt_tokens"]
                                             + body["usage"]["completion_tokens"])
    parts = json.loads(body["choices"][0]["message"]["content"])["parts"]
    assert parts[0] == {"type": "image_url", "stream_id": a,
                        "frames": [{"frame_index": 10, "timestamp_ms": 1000}]}
    assert parts[1]["type"] == "video_url" and parts[1]["stream_id"] == b
    assert [f["frame_index"] for f in parts[1]["frames"]] == [5, 6, 7, 8, 9, 10]


async def test_text_only_request(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json={
        "model": "local/frames", "messages": [{"role": "user", "content": "hello"}],
        "some_unknown_field": {"ignored": True}})
    assert response.status_code == 200
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"parts": []}


async def test_chat_reference_errors(client: httpx.AsyncClient,
                                     push_frames: Callable[..., None]) -> None:
    sid = (await create(client))["id"]
    push_frames(sid, 5)
    cases = {
        f"ovs://streams/{sid}?frame_index=99": "frame_not_yet_produced",
        f"ovs://streams/{sid}?frame_index=1&frame_index=2": "query_param_invalid",
        f"ovs://streams/{sid}?frame_index=1&offset_ms=-1": "query_param_invalid",
        f"ovs://streams/{sid}": "query_param_invalid",
        f"ovs://streams/{sid}?offset_ms=soon": "query_param_invalid",
        "ovs://streams?frame_index=1": "stream_url_invalid",
    }
    for url, code in cases.items():
        response = await ask(client, ("image_url", url))
        assert response.status_code == 422, url
        error = response.json()["detail"]["error"]
        assert error["code"] == code, (url, error)
        assert error["message"]
    response = await ask(client, ("video_url", f"ovs://streams/{sid}?start_frame_index=3"
                                               "&end_frame_index=2"))
    assert response.json()["detail"]["error"]["code"] == "segment_invalid"


async def test_model_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json={
        "model": "no/such", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["detail"]["error"]["code"] == "model_unavailable"


@pytest.mark.parametrize("body", [
    b"{not json",
    b"[]",
    b'{"model": "local/frames"}',
    b'{"model": "local/frames", "messages": "hi"}',
    b'{"model": "local/frames", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}',
    b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}',
])
async def test_validation_envelope(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/chat/completions", content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422
    payload = response.json()
    error = payload["error"]
    assert error == payload["detail"]["error"]  # the chat envelope, repeated for OpenAI SDKs
    assert error["type"] == "validation_error" and error["code"] == "request_invalid"
    assert error["message"] == payload["message"] and error["param"]
    assert all({"loc", "msg", "type"} <= set(d) for d in payload["details"])


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "the request body is not valid JSON (Expecting property name"),
    (b"[]", "the request body must be a JSON object"),
    (b'{"model": "local/frames"}', "messages: Field required"),
    (b'{"model": "local/frames", "messages": [{"role": "user", "content": [{"type": "x"}]}]}',
     "messages.0.content.0: Input tag 'x' found using 'type' does not match"),
    (b'{"model": "local/frames", "messages": [{"role": "user", "content": '
     b'[{"type": "image_url", "image_url": {}}]}]}', "messages.0.content.0.image_url.url: "
     "Field required"),
    (b'{"model": "m", "messages": [{"role": "bot", "content": "x"}], "max_tokens": 0}',
     "messages.0.role: Input should be 'system', 'user', 'assistant', 'developer' or 'tool' "
     "(and 1 more problem)"),
])
async def test_validation_messages_name_the_field(client: httpx.AsyncClient, body: bytes,
                                                  message: str) -> None:
    response = await client.post("/chat/completions", content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["message"].startswith(message), response.json()["message"]


async def test_stream_endpoint_validation_keeps_its_envelope(client: httpx.AsyncClient) -> None:
    response = await client.post("/streams", json={"source": {"type": "ftp", "url": "x"}})
    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "validation_error"
    assert payload["message"].startswith("source.type: Input should be 'rtsp' or 'hls'")


async def test_chat_errors_repeat_the_error_at_the_top_level(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json={
        "model": "no/such", "messages": [{"role": "user", "content": "hi"}]})
    body = response.json()
    assert body["error"] == body["detail"]["error"]
    assert body["error"]["code"] == "model_unavailable"


async def test_stream_true_sends_sse(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json={
        "model": "local/frames", "stream": True,
        "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert json.loads(text) == {"parts": []}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_whip_rejects_bad_tokens(client: httpx.AsyncClient) -> None:
    body = await create(client)
    url = f"/streams/{body['id']}/whip"
    sdp = {"content-type": "application/sdp"}
    wrong = await client.post(url, content="v=0", headers={**sdp, "authorization": "Bearer x"})
    assert wrong.status_code == 401
    renewed = (await client.post(f"/streams/{body['id']}/keepalive")).json()
    stale = await client.post(url, content="v=0", headers={
        **sdp, "authorization": f"Bearer {body['publish']['token']}"})
    assert stale.status_code == 401
    wrong_type = await client.post(url, content="v=0", headers={
        "content-type": "text/plain", "authorization": f"Bearer {renewed['publish']['token']}"})
    assert wrong_type.status_code == 415
