"""End to end over real sockets: uvicorn + WHIP over WebRTC + ovs:// resolution on live frames.

A synthetic scene is published with :class:`WhipPublisher` to the embedded
server running under uvicorn on 127.0.0.1; the ``local/frames`` model then
tells which retained frames each ovs:// URL resolved to, so the seed's rules
are checked against frames that really arrived over VP8.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from support.poll import eventually

from watcher.errors import AuthenticationError, NotFoundError
from watcher.media.testsrc import SyntheticScene
from watcher.media.tracks import FrameTrack
from watcher.media.whip import WhipPublisher
from watcher.overshoot.refs import frame_url, window_url
from watcher.server.app import create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "ovs_e2e_key"
WIDTH, HEIGHT, FPS = 320, 240, 10


# -- harness ---------------------------------------------------------------------------------------
@dataclass
class Server:
    app: FastAPI
    base: str
    client: httpx.AsyncClient

    async def create_stream(self) -> dict[str, Any]:
        response = await self.client.post("/streams")
        assert response.status_code == 201, response.text
        return response.json()

    async def status(self, stream_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/streams/{stream_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def chat(self, *parts: tuple[str, str]) -> httpx.Response:
        content: list[dict[str, Any]] = [{"type": "text", "text": "which frames?"}]
        content += [{"type": kind, kind: {"url": url}} for kind, url in parts]
        return await self.client.post("/chat/completions", json={
            "model": "local/frames", "messages": [{"role": "user", "content": content}]})

    async def frames(self, kind: str, url: str) -> list[tuple[int, int]]:
        """``(frame_index, timestamp_ms)`` of the frames one part resolved to."""
        response = await self.chat((kind, url))
        assert response.status_code == 200, response.text
        answer = json.loads(response.json()["choices"][0]["message"]["content"])
        return [(f["frame_index"], f["timestamp_ms"]) for f in answer["parts"][0]["frames"]]

    async def error(self, kind: str, url: str) -> tuple[int, str]:
        response = await self.chat((kind, url))
        return response.status_code, response.json()["detail"]["error"]["code"]


@contextlib.asynccontextmanager
async def serve(settings: ServerSettings) -> AsyncIterator[Server]:
    """The real app under uvicorn on a free 127.0.0.1 port (the socket is bound up front)."""
    app = create_app(settings, backends=[FramesModel()])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), timeout=10)
        assert server.started, "uvicorn did not start"
        base = f"http://127.0.0.1:{port}/v1beta"
        async with httpx.AsyncClient(base_url=base, timeout=10,
                                     headers={"authorization": f"Bearer {KEY}"}) as client:
            yield Server(app, base, client)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


class Pausable:
    """A frame producer that can stop sending (ticks return no frame) and resume."""

    def __init__(self) -> None:
        self.scene = SyntheticScene(WIDTH, HEIGHT, fps=FPS, events=("box",), start=0,
                                    period=4, duration=2)
        self.paused = False

    def __call__(self, n: int, t: float) -> Any:
        return None if self.paused else self.scene(n, t)


async def publish(publish_info: dict[str, Any], track: FrameTrack) -> WhipPublisher:
    publisher = WhipPublisher(publish_info["url"], publish_info["token"], track)
    await publisher.start()
    await publisher.wait_connected()
    return publisher


async def frames_at_least(server: Server, stream_id: str, count: int) -> dict[str, Any]:
    async def enough() -> dict[str, Any] | None:
        status = await server.status(stream_id)
        last = status["last_frame_index"]
        return status if status["last_frame_at_ms"] and last is not None and last + 1 >= count \
            else None
    return await eventually(enough)


@dataclass
class Live:
    server: Server
    stream_id: str
    producer: Pausable
    publisher: WhipPublisher


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def main_server() -> AsyncIterator[Server]:
    async with serve(ServerSettings(api_keys=[KEY])) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(main_server: Server) -> AsyncIterator[Live]:
    """A stream fed 320x240 synthetic video at 10 fps (stored at 5 fps) until 28 frames are
    stored (~6 s), still publishing."""
    created = await main_server.create_stream()
    producer = Pausable()
    publisher = await publish(created["publish"], FrameTrack(producer, FPS))
    try:
        await frames_at_least(main_server, created["id"], 28)
        yield Live(main_server, created["id"], producer, publisher)
    finally:
        await publisher.stop()


# -- frames arrive ---------------------------------------------------------------------------------
async def test_frames_arrive_over_webrtc(live: Live) -> None:
    status = await live.server.status(live.stream_id)
    assert status["state"] == "active"
    assert status["first_frame_at_ms"] is not None
    assert status["last_frame_at_ms"] >= status["first_frame_at_ms"]
    assert status["first_available_frame_index"] == 0
    assert status["retained_frame_count"] == status["last_frame_index"] + 1
    # 10 fps published, stored at the default max_stored_fps (5): recent_fps is the stored rate.
    assert status["max_stored_fps"] == 5
    assert 3.5 <= status["recent_fps"] <= 5.2
    assert status["received_fps"] >= status["recent_fps"] - 0.5  # every frame sent, stored or not
    assert live.publisher.connected and live.publisher.frames_sent >= 28
    server = live.server.app.state.server
    # Read the session and the stream's frames together (no await between): frames keep coming.
    [session] = [s for s in server.ingest.sessions() if s["stream_id"] == live.stream_id]
    retained_bytes = server.registry.get_active(live.stream_id).frames.bytes
    assert session["state"] == "connected"
    assert (session["width"], session["height"]) == (WIDTH, HEIGHT)
    assert session["frames_stored"] >= 28
    assert session["frames_skipped"] >= session["frames_received"] // 3  # about every other
    assert session["bytes_stored"] == retained_bytes
    # Stored as JPEG, never as raw pixels.
    stream = live.server.app.state.server.registry.get_active(live.stream_id)
    jpeg = stream.frames.last.jpeg
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) < WIDTH * HEIGHT


# -- single frames ---------------------------------------------------------------------------------
async def test_newest_frame_is_minus_one(live: Live) -> None:
    url = frame_url(live.stream_id, frame_index=-1)
    before = await live.server.status(live.stream_id)
    [(index, _)] = await live.server.frames("image_url", url)
    after = await live.server.status(live.stream_id)
    assert before["last_frame_index"] <= index <= after["last_frame_index"]

    # Paused publisher: the live edge holds still and -1 is exactly last_frame_index.
    live.producer.paused = True
    try:
        last = (await live.server.status(live.stream_id))["last_frame_index"]

        async def settled() -> bool:
            nonlocal last
            await asyncio.sleep(0.3)
            now = (await live.server.status(live.stream_id))["last_frame_index"]
            still, last = now == last, now
            return still
        await eventually(settled, timeout=5)
        [(index, ts)] = await live.server.frames("image_url", url)
        status = await live.server.status(live.stream_id)
        assert index == status["last_frame_index"] == last
        assert status["first_frame_at_ms"] + ts == status["last_frame_at_ms"]
        [(minus_two, _)] = await live.server.frames(
            "image_url", frame_url(live.stream_id, frame_index=-2))
        assert minus_two == last - 1
    finally:
        live.producer.paused = False


async def test_positive_frame_index_is_exact(live: Live) -> None:
    for wanted in (0, 3, 17):
        [(index, _)] = await live.server.frames(
            "image_url", frame_url(live.stream_id, frame_index=wanted))
        assert index == wanted


async def retained(live: Live, first: int = 0, last: int = 20) -> list[tuple[int, int]]:
    """Every retained frame in [first, last] with its stream time (a max_fps high enough)."""
    url = window_url(live.stream_id, start_frame_index=first, end_frame_index=last + 1,
                     max_fps=1000)
    frames = await live.server.frames("video_url", url)
    assert [i for i, _ in frames] == list(range(first, last + 1))
    assert all(a[1] < b[1] for a, b in itertools.pairwise(frames))
    return frames


async def test_timestamp_tolerance_and_direction(live: Live) -> None:
    frames = await retained(live, 0, 20)
    (ia, ta), (ib, tb) = max(itertools.pairwise(frames[5:]),
                             key=lambda pair: pair[1][1] - pair[0][1])
    gap = tb - ta
    assert gap >= 4, frames

    async def pick(target: int, **kw: Any) -> int:
        url = frame_url(live.stream_id, timestamp_ms=target, **kw)
        [(index, _)] = await live.server.frames("image_url", url)
        return index

    for direction in ("nearest", "forward", "backward"):
        assert await pick(ta, direction=direction) == ia  # an exact match wins
        assert await pick(tb, direction=direction) == ib
    assert await pick(ta + 1, direction="forward", tolerance_ms=gap) == ib
    assert await pick(tb - 1, direction="backward", tolerance_ms=gap) == ia
    assert await pick(ta + 1) == ia  # nearest, default tolerance
    assert await pick(tb - 1, direction="nearest") == ib
    # Nothing on the allowed side within tolerance: 422.
    status, code = await live.server.error(
        "image_url", frame_url(live.stream_id, timestamp_ms=ta + 1, direction="forward",
                               tolerance_ms=gap - 2))
    assert (status, code) == (422, "frame_not_found")
    # The first frame is at stream time 0: backward from before it finds nothing.
    assert await pick(0, direction="backward") == 0
    status, code = await live.server.error(
        "image_url", frame_url(live.stream_id, timestamp_ms=-1, direction="backward"))
    assert (status, code) == (422, "frame_not_found")


async def test_offset_ms_counts_from_now(live: Live) -> None:
    url = frame_url(live.stream_id, offset_ms=-1000, tolerance_ms=400)
    before = await live.server.status(live.stream_id)
    [(_, ts)] = await live.server.frames("image_url", url)
    after = await live.server.status(live.stream_id)
    assert before["stream_time_ms"] - 1000 - 400 <= ts <= after["stream_time_ms"] - 1000 + 400
    # offset 0 is now: the newest frame, within a tolerance wider than a frame interval.
    [(index, _)] = await live.server.frames(
        "image_url", frame_url(live.stream_id, offset_ms=0, tolerance_ms=2000))
    assert index >= before["last_frame_index"]
    # Far in the past no frame is within tolerance.
    status, code = await live.server.error(
        "image_url", frame_url(live.stream_id, offset_ms=-3_600_000))
    assert (status, code) == (422, "frame_not_found")


# -- windows ---------------------------------------------------------------------------------------
async def test_window_start_offset_and_max_fps(live: Live) -> None:
    """The last 2 s thinned to ``max_fps``, checked against every frame stored in that same
    window (both parts of one request resolve at one moment), so a publisher that falls
    behind on a loaded machine changes the frames, not the verdict."""
    before = await live.server.status(live.stream_id)
    for max_fps, url in ((2, window_url(live.stream_id, start_offset_ms=-2000, max_fps=2)),
                         (1, window_url(live.stream_id, start_offset_ms=-2000))):  # default 1
        response = await live.server.chat(
            ("video_url", url),
            ("video_url", window_url(live.stream_id, start_offset_ms=-2000, max_fps=1000)))
        assert response.status_code == 200, response.text
        parts = json.loads(response.json()["choices"][0]["message"]["content"])["parts"]
        kept, stored = ([(f["frame_index"], f["timestamp_ms"]) for f in part["frames"]]
                        for part in parts)
        interval_ms = 1000 // max_fps
        assert stored and set(kept) <= set(stored), (kept, stored)
        assert kept[-1] == stored[-1]  # the live edge is included
        assert stored[0][1] >= before["stream_time_ms"] - 2000
        assert len(kept) <= (stored[-1][1] - stored[0][1]) * max_fps // 1000 + 1
        assert all(b[1] - a[1] >= interval_ms // 2 for a, b in itertools.pairwise(kept))
        # nothing is thinned away that no kept frame stands for
        assert all(min(abs(f[1] - k[1]) for k in kept) <= interval_ms for f in stored)


async def test_window_mixed_anchors(live: Live) -> None:
    frames = await retained(live, 0, 20)
    url = window_url(live.stream_id, start_offset_ms=-3_600_000, end_frame_index=12,
                     max_fps=1000)
    assert await live.server.frames("video_url", url) == frames[:12]  # start clamps to 0
    url = window_url(live.stream_id, start_timestamp_ms=frames[4][1], end_frame_index=9,
                     max_fps=1000)
    assert await live.server.frames("video_url", url) == frames[4:9]  # the end is exclusive
    url = window_url(live.stream_id, start_frame_index=15, end_timestamp_ms=frames[18][1],
                     max_fps=1000)
    assert await live.server.frames("video_url", url) == frames[15:18]


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "query", "code"), [
    ("image_url", "frame_index=1000000", "frame_not_yet_produced"),
    ("image_url", "timestamp_ms=360000000", "frame_not_yet_produced"),
    ("video_url", "start_frame_index=0&end_frame_index=1000000", "frame_not_yet_produced"),
    ("video_url", "start_offset_ms=3600000", "frame_not_yet_produced"),
    ("image_url", "frame_index=1&frame_index=2", "query_param_invalid"),
    ("image_url", "frame_index=1&timestamp_ms=20", "query_param_invalid"),
    ("video_url", "start_frame_index=1&start_offset_ms=-500", "query_param_invalid"),
    ("video_url", "start_frame_index=1&end_frame_index=5&end_offset_ms=0",
     "query_param_invalid"),
    ("image_url", "tolerance_ms=50", "query_param_invalid"),
    ("video_url", "end_frame_index=5&max_fps=2", "query_param_invalid"),
    ("image_url", "frame_index=abc", "query_param_invalid"),
    ("image_url", "frame_index=1.5", "query_param_invalid"),
    ("image_url", "timestamp_ms=10&tolerance_ms=0", "query_param_invalid"),
    ("image_url", "offset_ms=-3600000", "frame_not_found"),
    ("image_url", "offset_ms=-10&direction=sideways", "query_param_invalid"),
    ("video_url", "start_offset_ms=-1000&max_fps=0", "query_param_invalid"),
    ("video_url", "start_frame_index=10&end_frame_index=5", "segment_invalid"),
    ("video_url", "start_frame_index=10&end_frame_index=10", "segment_invalid"),
    ("video_url", "start_timestamp_ms=2000&end_timestamp_ms=1000", "segment_invalid"),
])
async def test_unprocessable_urls(live: Live, kind: str, query: str, code: str) -> None:
    url = f"ovs://streams/{live.stream_id}?{query}"
    assert await live.server.error(kind, url) == (422, code)


# -- clamping after eviction -----------------------------------------------------------------------
async def test_evicted_frames_clamp_to_first_available() -> None:
    async with serve(ServerSettings(api_keys=[KEY], retention_seconds=2)) as server:
        created = await server.create_stream()
        stream_id = created["id"]
        publisher = await publish(created["publish"], FrameTrack(Pausable(), FPS))
        try:
            async def evicted() -> dict[str, Any] | None:
                status = await server.status(stream_id)
                return status if (status["first_available_frame_index"] or 0) >= 3 else None
            await eventually(evicted, timeout=15)
            before = await server.status(stream_id)
            [(index, _)] = await server.frames("image_url", frame_url(stream_id, frame_index=0))
            window = await server.frames("video_url", window_url(
                stream_id, start_frame_index=1, max_fps=1000))
            after = await server.status(stream_id)
        finally:
            await publisher.stop()
    low, high = before["first_available_frame_index"], after["first_available_frame_index"]
    assert low <= index <= high
    assert low <= window[0][0] <= high
    assert [i for i, _ in window] == list(range(window[0][0], window[-1][0] + 1))
    assert before["evicted_frame_count"] >= 3
    assert before["retained_frame_count"] <= 2 * 13  # about retention x fps


# -- WHIP sessions ---------------------------------------------------------------------------------
async def test_whip_rejects_wrong_token_and_unknown_stream(main_server: Server) -> None:
    created = await main_server.create_stream()
    track = FrameTrack(Pausable(), FPS)
    wrong = WhipPublisher(created["publish"]["url"], "not-the-token", track)
    with pytest.raises(AuthenticationError) as caught:
        await wrong.start()
    assert caught.value.status == 401
    assert wrong.closed.is_set() and not wrong.connected
    missing = created["publish"]["url"].replace(created["id"], str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        await WhipPublisher(missing, created["publish"]["token"], track).start()
    # Not SDP at all.
    response = await main_server.client.post(
        f"/streams/{created['id']}/whip", content=b"hello",
        headers={"authorization": f"Bearer {created['publish']['token']}",
                 "content-type": "application/sdp"})
    assert response.status_code == 400


async def test_delete_ends_session_and_keepalive_rotates_token(main_server: Server) -> None:
    ingest = main_server.app.state.server.ingest
    created = await main_server.create_stream()
    stream_id, first_info = created["id"], created["publish"]
    track = FrameTrack(Pausable(), FPS)  # one source track, reused across reconnects
    first = await publish(first_info, track)
    await frames_at_least(main_server, stream_id, 3)
    first_session = ingest.session_stats(stream_id).session_id

    renewed = (await main_server.client.post(f"/streams/{stream_id}/keepalive")).json()
    assert renewed["publish"]["token"] != first_info["token"]
    with pytest.raises(AuthenticationError):
        await WhipPublisher(first_info["url"], first_info["token"], track).start()

    # Reconnect with the fresh token: the new session replaces the old one.
    second = await publish(renewed["publish"], track)
    await eventually(first.closed.is_set, timeout=5)
    assert ingest.session_stats(stream_id).session_id != first_session
    reached = (await main_server.status(stream_id))["last_frame_index"]
    await frames_at_least(main_server, stream_id, reached + 4)
    assert second.frames_sent >= 3
    await first.stop()  # its DELETE finds the replaced session gone: harmless

    # DELETE on the Location ends the session, and frames stop arriving.
    location = second.location
    assert location is not None and f"/streams/{stream_id}/whip/" in location
    await second.stop()
    assert ingest.session_stats(stream_id) is None
    stopped = (await main_server.status(stream_id))["last_frame_index"]
    await asyncio.sleep(0.5)
    status = await main_server.status(stream_id)
    assert status["last_frame_index"] == stopped
    assert status["state"] == "active"  # ending a publisher does not end the stream
    again = await main_server.client.delete(
        location, headers={"authorization": f"Bearer {renewed['publish']['token']}"})
    assert again.status_code == 404


async def test_deleting_the_stream_closes_the_publisher(main_server: Server) -> None:
    created = await main_server.create_stream()
    publisher = await publish(created["publish"], FrameTrack(Pausable(), FPS))
    try:
        await frames_at_least(main_server, created["id"], 2)
        response = await main_server.client.delete(f"/streams/{created['id']}")
        assert response.status_code == 200
        await eventually(publisher.closed.is_set, timeout=5)
        assert not publisher.connected
        assert main_server.app.state.server.ingest.session_stats(created["id"]) is None
        status = await main_server.status(created["id"])
        assert (status["state"], status["end_reason"]) == ("ended", "deleted")
    finally:
        await publisher.stop()


class Counted:
    """Sends ``count`` frames, then nothing more (the track waits forever)."""

    def __init__(self, count: int) -> None:
        self.scene = SyntheticScene(WIDTH, HEIGHT, fps=FPS, events=("box",), start=0,
                                    period=4, duration=2)
        self.count = count
        self.sent = 0
        self.done = asyncio.Event()

    def track(self) -> FrameTrack:
        counted = self

        class Track(FrameTrack):
            async def recv(self) -> Any:
                if counted.sent >= counted.count:
                    counted.done.set()
                    await asyncio.Event().wait()
                counted.sent += 1
                return await super().recv()

        return Track(self.scene, FPS)


async def test_the_last_frame_sent_is_received_without_a_next_one(main_server: Server) -> None:
    """A frame is complete at its last packet: the server does not wait for the next
    frame to arrive (a whole frame interval) before it decodes and stores it."""
    created = await main_server.create_stream()
    counted = Counted(8)
    publisher = await publish(created["publish"], counted.track())
    try:
        await counted.done.wait()
        ingest = main_server.app.state.server.ingest
        stats = await eventually(lambda: (s := ingest.session_stats(created["id"])) is not None
                                 and s.frames_received >= counted.count and s)
        assert stats.frames_received == counted.count
    finally:
        await publisher.stop()
