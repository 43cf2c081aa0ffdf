"""Media parts that are not ovs:// references: sent upstream as given, or a clear 400."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import cv2
import httpx
import numpy as np
import pytest
from support.upstream import FakeUpstream, serve_fake_upstream

from watcher.server.app import create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.backends.upstream import Upstream, UpstreamSettings
from watcher.server.backends.vision import VisionModel
from watcher.server.settings import ServerSettings

KEY = "ovs-external-urls"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
PHOTO = "https://viewer:hunter2@cams.example.com/snap.jpg?token=abc"
CLIP = "https://cams.example.com/clip.mp4"
DATA_IMAGE = "data:image/jpeg;base64," + base64.b64encode(
    cv2.imencode(".jpg", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()).decode()


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeUpstream]:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    async with serve_fake_upstream() as state:
        yield state


def client_for(fake: FakeUpstream, *, forward: bool) -> httpx.AsyncClient:
    upstream = Upstream(UpstreamSettings(base_url=fake.base_url, models={"qwen": "vlm"}))
    app = create_app(ServerSettings(api_keys=[KEY], forward_media_urls=forward),
                     backends=[FramesModel(), VisionModel(), *upstream.models()])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://testserver/v1beta",
                             headers={"authorization": f"Bearer {KEY}"})


async def ask(client: httpx.AsyncClient, model: str, *parts: tuple[str, str]) -> httpx.Response:
    content: list[dict] = [{"type": "text", "text": "what is this?"}]
    content += [{"type": kind, kind: {"url": url}} for kind, url in parts]
    return await client.post("/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": content}]})


async def test_http_urls_go_upstream_as_given_when_the_setting_allows(
        fake: FakeUpstream) -> None:
    async with client_for(fake, forward=True) as client:
        response = await ask(client, "qwen", ("image_url", PHOTO), ("video_url", CLIP))
    assert response.status_code == 200, response.text
    sent = fake.last["json"]["messages"][0]["content"]
    assert sent[1:] == [{"type": "image_url", "image_url": {"url": PHOTO}},
                        {"type": "video_url", "video_url": {"url": CLIP}}]


async def test_http_urls_are_refused_when_the_setting_is_off(fake: FakeUpstream) -> None:
    async with client_for(fake, forward=False) as client:
        for kind, url in (("image_url", PHOTO), ("video_url", CLIP)):
            response = await ask(client, "qwen", (kind, url))
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "media_url_forbidden"
            assert "forward_media_urls" in error["message"]
            assert "hunter2" not in response.text and "cams.example.com" not in response.text
    assert fake.requests == []  # nothing reached the upstream


async def test_data_urls_go_upstream_whatever_the_setting(fake: FakeUpstream) -> None:
    async with client_for(fake, forward=False) as client:
        response = await ask(client, "qwen", ("image_url", DATA_IMAGE))
    assert response.status_code == 200, response.text
    assert fake.last["json"]["messages"][0]["content"][1]["image_url"]["url"] == DATA_IMAGE


@pytest.mark.parametrize(("model", "kind", "url", "code"), [
    ("local/vision", "image_url", PHOTO, "image_url_unsupported"),
    ("local/vision", "video_url", CLIP, "video_url_unsupported"),
    ("local/vision", "video_url", "data:video/mp4;base64,AAAA", "video_url_unsupported"),
    ("local/frames", "image_url", DATA_IMAGE, "image_url_unsupported"),
    ("local/frames", "video_url", CLIP, "video_url_unsupported"),
    ("qwen", "image_url", "file:///etc/passwd", "media_url_unsupported"),
    ("local/vision", "video_url", "/srv/clips/door.mp4", "media_url_unsupported"),
])
async def test_local_models_and_other_schemes_answer_a_clear_400(
        fake: FakeUpstream, model: str, kind: str, url: str, code: str) -> None:
    async with client_for(fake, forward=True) as client:
        response = await ask(client, model, (kind, url))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "validation_error"
    assert "ovs://" in error["message"]
    assert "hunter2" not in response.text and "passwd" not in response.text
    assert fake.requests == []


async def test_local_vision_still_reads_a_data_image(fake: FakeUpstream) -> None:
    async with client_for(fake, forward=False) as client:
        response = await ask(client, "local/vision", ("image_url", DATA_IMAGE))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
