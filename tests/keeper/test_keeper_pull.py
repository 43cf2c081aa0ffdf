"""The keeper with a server-pulled camera: a create that cannot connect is retried with backoff."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support.camera import MjpegCamera
from support.keeper import KEY, Harness, Spec, make_harness
from support.poll import eventually

from watcher.clock import SystemClock
from watcher.media.testsrc import SyntheticScene
from watcher.server.settings import ServerSettings


@pytest.fixture
async def pull_harness() -> AsyncIterator[Harness]:
    settings = ServerSettings(api_keys=[KEY], ttl_seconds=30, allow_private_sources=True,
                              pull_connect_timeout_seconds=0.3)
    h = await make_harness(settings, SystemClock())
    yield h
    for keeper in h.keepers:
        await keeper.stop()
    await h.server.aclose()
    await h.http.aclose()


async def test_a_camera_that_is_not_up_yet_is_retried_with_backoff(
        pull_harness: Harness) -> None:
    camera = MjpegCamera(SyntheticScene(width=160, height=120, fps=10, noise=0))
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(seconds)

    keeper = pull_harness.keeper(Spec(source=camera.url, pull=True), sleep=sleep)
    keeper.start()
    try:
        await eventually(lambda: len(pauses) >= 3, timeout=30)
        assert keeper.stream_id is None and keeper.streams_created == 0
        assert "Could not connect to source url within 0.3 s" in (keeper.last_error or "")
        assert pauses[:3] == sorted(pauses[:3]) and pauses[2] > pauses[0]  # backing off
        assert pull_harness.server.registry.all_active() == []  # failed creates left nothing

        camera.start()
        stream_id = await keeper.wait_live(30)
        assert keeper.streams_created == 1
        assert [s.id for s in pull_harness.server.registry.all_active()] == [stream_id]
        status = await pull_harness.client.get_stream(stream_id)
        assert status.source == {"type": "hls"} and isinstance(status.last_pull, int)
    finally:
        camera.stop()
