"""The server's limits on pull sources and streams: private addresses, caps, clear 4xx."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from support.camera import MjpegCamera

from watcher.media.testsrc import SyntheticScene
from watcher.server.app import EmbeddedServer, create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings
from watcher.server.sourceguard import address_kind

KEY = "ovs-limits-key"
OTHER_KEY = "ovs-limits-other"

Served = tuple[EmbeddedServer, httpx.AsyncClient]


@pytest.fixture
def serve() -> Callable[..., AbstractAsyncContextManager[Served]]:
    @asynccontextmanager
    async def serving(**settings: object) -> AsyncIterator[Served]:
        app = create_app(ServerSettings(api_keys=[KEY, OTHER_KEY], **settings),  # type: ignore[arg-type]
                         backends=[FramesModel()])
        server: EmbeddedServer = app.state.server
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver/v1beta",
                                     headers={"authorization": f"Bearer {KEY}"}) as client:
            try:
                yield server, client
            finally:
                await server.aclose()

    return serving


@pytest.fixture
def camera() -> AsyncIterator[MjpegCamera]:
    camera = MjpegCamera(SyntheticScene(width=160, height=120, fps=10, noise=0))
    camera.start()
    yield camera
    camera.stop()


def pull(url: str, kind: str = "hls") -> dict:
    return {"source": {"type": kind, "url": url}}


@pytest.mark.parametrize(("url", "kind"), [
    ("rtsp://admin:secret@127.0.0.1:554/stream1", "loopback"),
    ("rtsp://admin:secret@localhost/stream1", "loopback"),
    ("rtsp://admin:secret@[::1]:8554/stream1", "loopback"),
    ("http://admin:secret@[::ffff:127.0.0.1]/live.m3u8", "loopback"),
    ("http://admin:secret@10.1.2.3/live.m3u8", "private"),
    ("http://admin:secret@192.168.1.20/live.m3u8", "private"),
    ("http://admin:secret@172.16.0.9/live.m3u8", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
    ("http://[fe80::1]/live.m3u8", "link-local (cloud metadata)"),
    ("http://[fd00:ec2::254]/live.m3u8", "private"),
    ("rtsp://100.100.100.200/stream", "non-public"),
    ("rtsp://0.0.0.0/stream", "unspecified"),
])
async def test_private_addresses_are_refused_by_default(serve, url: str, kind: str) -> None:
    async with serve() as (server, client):
        source_type = "rtsp" if url.startswith("rtsp") else "hls"
        response = await client.post("/streams", json=pull(url, source_type))
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert f"is a {kind} address" in detail
        assert "--allow-private-sources" in detail
        assert "secret" not in response.text and "169.254" not in detail
        assert (await client.get("/streams")).json()["data"] == []
        assert server.puller.active_pulls == 0


async def test_an_unresolvable_host_is_refused(serve) -> None:
    async with serve() as (_, client):
        for url in ("http://camera.invalid/x.m3u8", f"https://{'0' * 300}/x.m3u8"):
            response = await client.post("/streams", json=pull(url))
            assert response.status_code == 422, url  # a too-long label is not a 500
            assert response.json()["detail"].startswith("Could not connect to source url")


async def test_a_public_address_passes_the_guard_then_must_connect(serve) -> None:
    # Documentation ranges (203.0.113.0/24, ...) are not global: use an address that is.
    assert address_kind(ipaddress.ip_address("93.184.216.34")) is None
    async with serve(pull_connect_timeout_seconds=0.3) as (_, client):
        response = await client.post(
            "/streams", json=pull("rtsp://admin:secret@93.184.216.34:1/stream", "rtsp"))
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith("Could not connect to source url within 0.3 s (")
        assert "secret" not in detail and "93.184" not in detail
        assert (await client.get("/streams")).json()["data"] == []


async def test_allow_private_sources_lifts_the_rule(serve, camera: MjpegCamera) -> None:
    async with serve(allow_private_sources=True) as (_, client):
        response = await client.post("/streams", json=pull(camera.url))
    assert response.status_code == 201, response.text
    assert response.json()["source"] == {"type": "hls"}


async def test_streams_per_key_are_capped(serve) -> None:
    async with serve(max_streams_per_key=2) as (_, client):
        ids = [(await client.post("/streams")).json()["id"] for _ in range(2)]
        refused = await client.post("/streams")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["detail"] == (
            "this API key already holds 2 active streams, the most this server allows "
            "(max_streams_per_key 2); delete one or let its lease run out")
        other = await client.post("/streams", headers={"authorization": f"Bearer {OTHER_KEY}"})
        assert other.status_code == 201  # the cap is per key
        await client.delete(f"/streams/{ids[0]}")
        assert (await client.post("/streams")).status_code == 201  # an ended one frees a slot


async def test_concurrent_pulls_are_capped_over_all_keys(serve, camera: MjpegCamera) -> None:
    async with serve(allow_private_sources=True, max_pulls=1) as (server, client):
        first = await client.post("/streams", json=pull(camera.url))
        assert first.status_code == 201, first.text
        refused = await client.post("/streams", json=pull(camera.url),
                                    headers={"authorization": f"Bearer {OTHER_KEY}"})
        assert refused.status_code == 429
        assert refused.json()["detail"].startswith(
            "this server already pulls 1 cameras, the most it allows (max_pulls 1)")
        assert (await client.post("/streams")).status_code == 201  # WHIP streams still fine
        await client.delete(f"/streams/{first.json()['id']}")
        assert server.puller.active_pulls == 0
        again = await client.post("/streams", json=pull(camera.url))
        assert again.status_code == 201, again.text


async def test_max_pulls_0_refuses_pull_sources(serve, camera: MjpegCamera) -> None:
    async with serve(allow_private_sources=True, max_pulls=0) as (_, client):
        refused = await client.post("/streams", json=pull(camera.url))
    assert refused.status_code == 429
    assert "does not pull cameras" in refused.json()["detail"]
