"""The embedded server's document and the behaviour it promises, checked in-process."""

from __future__ import annotations

import httpx
import pytest

from watcher.server.app import create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.openapi import OPERATIONS, documented_methods
from watcher.server.settings import ServerSettings

KEY = "ovs-document-key"


@pytest.fixture
async def client() -> httpx.AsyncClient:
    app = create_app(ServerSettings(api_keys=[KEY]), backends=[FramesModel()])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                 headers={"authorization": f"Bearer {KEY}"}) as c:
        yield c


async def test_every_route_is_documented_with_security_and_envelopes(
        client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    served = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert served == set(OPERATIONS)
    assert set(doc["components"]["securitySchemes"]) == {"ApiKey", "PublishToken"}
    whip = doc["paths"]["/v1beta/streams/{stream_id}/whip"]["post"]
    assert whip["security"] == [{"PublishToken": []}]
    assert whip["responses"]["201"]["headers"]["Location"]["required"] is True
    create = doc["paths"]["/v1beta/streams"]["post"]
    assert create["security"] == [{"ApiKey": []}]
    assert create["responses"]["401"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/StreamError"}
    assert doc["paths"]["/v1beta/models"]["get"]["security"] == []
    # The chat model is one of the models this server lists; examples use ovs:// parts.
    chat = doc["paths"]["/v1beta/chat/completions"]["post"]
    assert doc["components"]["schemas"]["ChatBody"]["properties"]["model"]["enum"] == [
        "local/frames"]
    examples = chat["requestBody"]["content"]["application/json"]["examples"]
    assert all("ovs://streams/" in str(e["value"]) for e in examples.values())
    # FastAPI's array-of-errors 422 is gone: the server never answers it.
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    patch = doc["paths"]["/v1beta/streams/{stream_id}/whip/{session_id}"]["patch"]
    assert set(patch["responses"]) == {"405"}


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    cases = {"/v1beta/streams": "GET, POST", "/v1beta/streams/abc": "DELETE, GET",
             "/v1beta/streams/a/whip/b": "DELETE, PATCH", "/v1beta/chat/completions": "POST"}
    for path, allow in cases.items():
        response = await client.request("PUT", path)
        assert response.status_code == 405, path
        assert response.headers.get_list("allow") == [allow], path
        assert response.json() == {"detail": "Method Not Allowed"}
    doc = (await client.get("/openapi.json")).json()
    assert documented_methods(doc, "/v1beta/streams/x/keepalive") == ["POST"]


@pytest.mark.parametrize(("source", "accepted"), [
    ({"type": "rtsp", "url": "rtsp://user:secret@cam.invalid:554/stream1"}, True),
    ({"type": "rtsp", "url": "RTSPS://cam.invalid/x"}, True),
    ({"type": "hls", "url": "https://cam.invalid/live.m3u8"}, True),
    ({"type": "rtsp", "url": "rtsp://u:p@[2001:db8::1]:8554/x"}, True),
    ({"type": "rtsp", "url": "http://cam/x"}, False),
    ({"type": "hls", "url": "rtsp://cam/x"}, False),
    ({"type": "rtsp", "url": "rtsp://"}, False),
    ({"type": "rtsp", "url": "rtsp://:554/x"}, False),
    ({"type": "rtsp", "url": "rtsp://cam/x\n"}, False),
    ({"type": "rtsp", "url": "rtsp://cam/a b"}, False),
    ({"type": "rtsp", "url": "/dev/video0"}, False),
    ({"type": "rtsp", "url": "rtsp://cam/x", "extra": 1}, False),
])
async def test_source_urls_follow_the_documented_pattern(
        client: httpx.AsyncClient, source: dict[str, object], accepted: bool) -> None:
    response = await client.post("/v1beta/streams", json={"source": source, "ignored": 1})
    if accepted:  # past validation, the host must resolve to a public address: none does
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith("Could not connect to source url") or (
            "is a private address" in detail), detail
        return
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert "source" in body["message"]
    assert "secret" not in response.text
