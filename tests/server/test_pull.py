"""Server-side pull: a stream created with a source is fed by the server itself.

The real app runs in-process (httpx.ASGITransport) and pulls an HLS playlist
from a real HTTP server on 127.0.0.1 that demands the credentials the source
URL carries; the URL never shows up in a response or a log line. These
servers allow private sources (the camera is on loopback); the refusal of
private addresses is tested in ``test_pull_limits.py``.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from support.camera import MjpegCamera
from support.poll import eventually

from watcher.backoff import Backoff
from watcher.media.testsrc import SyntheticScene
from watcher.overshoot.refs import frame_url, window_url
from watcher.server.app import EmbeddedServer, create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings
from watcher.server.streams import key_id

KEY = "ovs_pull_key"
CREDENTIALS = "camuser:secret"
FPS = 10
POLL = 0.02


def write_hls(folder: Path, seconds: int = 2) -> Path:
    """A VOD HLS playlist with 1 s H.264 segments of a moving gradient."""
    folder.mkdir(parents=True, exist_ok=True)
    playlist = folder / "live.m3u8"
    options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
    with av.open(str(playlist), "w", format="hls", options=options) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"g": str(FPS), "preset": "ultrafast"}
        ramp = np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None]
        for n in range(seconds * FPS):
            image = np.ascontiguousarray(np.broadcast_to(np.roll(ramp, 8 * n, axis=1),
                                                         (240, 320, 3)))
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = n, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return playlist


class Camera:
    """An HTTP server on 127.0.0.1 serving ``root`` only with Basic ``CREDENTIALS``."""

    def __init__(self, root: Path) -> None:
        expected = f"Basic {base64.b64encode(CREDENTIALS.encode()).decode()}"
        self.requests: list[str] = []
        camera = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("authorization") != expected:
                    self.send_response(401)
                    self.send_header("www-authenticate", 'Basic realm="camera"')
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                camera.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{CREDENTIALS}@127.0.0.1:{self.port}/live.m3u8"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pull_camera(tmp_path: Path) -> Iterator[Camera]:
    write_hls(tmp_path / "hls")
    camera = Camera(tmp_path / "hls")
    yield camera
    camera.close()


@pytest.fixture
async def pull_server() -> AsyncIterator[tuple[EmbeddedServer, httpx.AsyncClient]]:
    app = create_app(ServerSettings(api_keys=[KEY], allow_private_sources=True,
                                    pull_connect_timeout_seconds=10),
                     backends=[FramesModel()])
    server: EmbeddedServer = app.state.server
    server.puller.backoff = Backoff(initial=0.05, maximum=0.2, jitter=0)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver/v1beta",
                                 headers={"authorization": f"Bearer {KEY}"}) as client:
        try:
            yield server, client
        finally:
            await server.aclose()


until = functools.partial(eventually, interval=POLL)


def pull_threads(stream_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if stream_id in t.name and t.is_alive()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_server_pulls_an_hls_source(pull_server: Any, pull_camera: Camera,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server, client = pull_server
    responses: list[httpx.Response] = []

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, path, **kwargs)
        responses.append(response)
        return response

    created = await call("POST", "/streams",
                         json={"source": {"type": "hls", "url": pull_camera.url}})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["publish"] is None and body["state"] == "active"
    assert body["source"] == {"type": "hls"}  # echoed, never the url
    stream_id = body["id"]
    assert server.puller.pull_stats(stream_id)["frames"] + 1 >= 1  # created once connected

    async def status_with_frames() -> dict[str, Any] | None:
        status = (await call("GET", f"/streams/{stream_id}")).json()
        ready = status["last_frame_at_ms"] and (status["last_frame_index"] or 0) >= 3
        return status if ready else None

    status = await until(status_with_frames, timeout=10)
    assert status["source"] == {"type": "hls"}
    assert isinstance(status["last_pull"], int)  # the last pulled frame's time, in ms
    assert status["last_pull"] >= status["last_frame_at_ms"]
    pull = status["pull"]
    assert pull["state"] == "live" and pull["frames"] >= 4
    assert pull["last_error"] is None and isinstance(pull["reconnects"], int)
    assert pull["last_frame_at_ms"] == status["last_frame_at_ms"]
    assert (pull["width"], pull["height"]) == (320, 240)
    assert {"/live.m3u8", "/live0.ts"} <= set(pull_camera.requests)

    # The frames are the stream's like WHIP ones: queryable through ovs:// references.
    content = [{"type": "image_url", "image_url": {"url": frame_url(stream_id, frame_index=-1)}},
               {"type": "video_url",
                "video_url": {"url": window_url(stream_id, start_frame_index=0, max_fps=FPS)}}]
    chat = await call("POST", "/chat/completions", json={
        "model": "local/frames", "messages": [{"role": "user", "content": content}]})
    assert chat.status_code == 200, chat.text
    image, video = json.loads(chat.json()["choices"][0]["message"]["content"])["parts"]
    assert len(image["frames"]) == 1 and image["frames"][0]["frame_index"] >= 3
    assert len(video["frames"]) >= 4

    listed = await call("GET", "/streams")
    assert [s["id"] for s in listed.json()["data"]] == [stream_id]
    assert pull_threads(stream_id)

    deleted = await call("DELETE", f"/streams/{stream_id}")
    assert deleted.json() == {"id": stream_id, "deleted": True}
    await until(lambda: not pull_threads(stream_id), timeout=3)
    final = (await call("GET", f"/streams/{stream_id}")).json()
    assert final["state"] == "ended" and final["pull"]["state"] == "stopped"
    assert server.puller.pull_stats(stream_id) is None

    for response in responses:
        assert "secret" not in response.text and CREDENTIALS not in response.text
        assert f"127.0.0.1:{pull_camera.port}" not in response.text  # no part of the URL
    assert "secret" not in caplog.text and pull_camera.url not in caplog.text


async def test_a_camera_that_cannot_be_opened_fails_the_create(
        pull_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server, client = pull_server
    server.settings = server.settings.model_copy(update={"pull_connect_timeout_seconds": 0.5})
    url = f"rtsp://admin:secret@127.0.0.1:{free_port()}/stream1"
    created = await client.post("/streams", json={"source": {"type": "rtsp", "url": url}})
    assert created.status_code == 422, created.text
    message = created.json()["detail"]
    assert message.startswith("Could not connect to source url within 0.5 s (")
    assert "refused" in message.lower()
    assert "secret" not in message and "127.0.0.1" not in message
    assert (await client.get("/streams")).json()["data"] == []  # no stream was left behind
    assert server.puller.active_pulls == 0
    await until(lambda: not any("rtsp pull" in t.name for t in threading.enumerate()
                                if t.is_alive()), timeout=5)
    assert "secret" not in caplog.text and url not in caplog.text


async def test_a_camera_that_drops_after_connecting_is_retried(pull_server: Any) -> None:
    _, client = pull_server
    camera = MjpegCamera(SyntheticScene(width=160, height=120, fps=10, noise=0))
    camera.start()
    try:
        created = await client.post("/streams", json={"source": {"type": "hls",
                                                                 "url": camera.url}})
        assert created.status_code == 201, created.text
        stream_id = created.json()["id"]
        camera.stop()

        async def retried() -> dict[str, Any] | None:
            pull = (await client.get(f"/streams/{stream_id}")).json()["pull"]
            return pull if pull["reconnects"] >= 2 else None

        pull = await until(retried, timeout=10)
        assert pull["state"] == "reconnecting" and pull["frames"] >= 1
        assert "127.0.0.1" not in (pull["last_error"] or "")
        keepalive = await client.post(f"/streams/{stream_id}/keepalive")
        assert keepalive.status_code == 200 and keepalive.json()["publish"] is None

        camera.start()
        frames = pull["frames"]

        async def live_again() -> bool:
            pull = (await client.get(f"/streams/{stream_id}")).json()["pull"]
            return pull["state"] == "live" and pull["frames"] > frames

        await until(live_again, timeout=15)
        await client.delete(f"/streams/{stream_id}")
        await until(lambda: not pull_threads(stream_id), timeout=5)
    finally:
        camera.stop()


@pytest.mark.parametrize(("kind", "url"), [
    ("rtsp", "http://user:secret@127.0.0.1/live.m3u8"),
    ("hls", "rtsp://user:secret@127.0.0.1/stream"),
    ("hls", "file:///etc/passwd"),
    ("hls", "/etc/passwd"),
    ("rtsp", "/dev/video0"),
    ("hls", "testsrc:events=box"),
    ("hls", "http:///no-host.m3u8"),
    ("rtsp", "ftp://user:secret@host/x"),
])
async def test_only_network_sources_of_the_right_type_are_pulled(
        pull_server: Any, kind: str, url: str) -> None:
    _, client = pull_server
    response = await client.post("/streams", json={"source": {"type": kind, "url": url}})
    assert response.status_code == 422, response.text
    assert "secret" not in response.text and url not in response.text
    assert (await client.get("/streams")).json()["data"] == []


async def test_server_shutdown_stops_every_pull(pull_server: Any, pull_camera: Camera) -> None:
    server, client = pull_server
    ids = []
    for _ in range(2):
        response = await client.post(
            "/streams", json={"source": {"type": "hls", "url": pull_camera.url}})
        ids.append(response.json()["id"])
    await until(lambda: all(server.puller.pull_stats(i)["frames"] for i in ids), timeout=10)
    await server.aclose()
    assert not any(pull_threads(i) for i in ids)
    owner = key_id(KEY)
    assert [server.registry.get(i, owner).pull_status["state"] for i in ids] == ["stopped"] * 2
