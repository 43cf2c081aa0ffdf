"""A byte cap too small for the retention says so: a log warning and a status field."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from watcher.clock import ManualClock
from watcher.server.app import create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

KEY = "ovs_shortfall_key"
FRAME = b"\xff\xd8" + bytes(10_000) + b"\xff\xd9"  # 10 KB, as a stored JPEG


def make_app(max_mb: float) -> tuple[FastAPI, ManualClock]:
    clock = ManualClock()
    settings = ServerSettings(api_keys=[KEY], retention_seconds=60, max_mb_per_stream=max_mb)
    return create_app(settings, clock=clock, backends=[FramesModel()]), clock


async def store_for(app: FastAPI, clock: ManualClock, seconds: int) -> dict[str, object]:
    """5 frames a second for ``seconds``, then the stream's status over the API."""
    server = app.state.server
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test/v1beta",
                                 headers={"authorization": f"Bearer {KEY}"}) as client:
        created = (await client.post("/streams")).raise_for_status().json()
        stream = server.registry.get_active(created["id"])
        for n in range(seconds * 5):
            if n:
                clock.advance(0.2)
            if n % 50 == 0:
                server.registry.keepalive(stream.id, stream.owner)
            server.registry.add_frame(stream, FRAME)
        return (await client.get(f"/streams/{created['id']}")).raise_for_status().json()


async def test_a_cap_that_holds_the_retention_reports_no_shortfall(
        caplog: pytest.LogCaptureFixture) -> None:
    app, clock = make_app(max_mb=4.0)  # 60 s x 5 fps x 10 KB = 3 MB
    with caplog.at_level(logging.WARNING, logger="watcher.server.streams"):
        status = await store_for(app, clock, 90)
    assert status["retention_shortfall"] is None
    assert status["retained_frame_count"] == 301  # 60 s of frames, both ends included
    assert "do not fit" not in caplog.text


async def test_a_cap_too_small_warns_once_and_says_how_much_is_held(
        caplog: pytest.LogCaptureFixture) -> None:
    app, clock = make_app(max_mb=1.0)  # holds 100 frames: 20 s of the 60 s
    with caplog.at_level(logging.WARNING, logger="watcher.server.streams"):
        status = await store_for(app, clock, 90)
    shortfall = status["retention_shortfall"]
    assert shortfall == {"retention_seconds": 60.0, "held_seconds": 19.8,
                         "max_bytes": 1_000_000,
                         "frames_evicted_early": 450 - status["retained_frame_count"]}
    warnings = [r for r in caplog.records if "do not fit" in r.getMessage()]
    assert len(warnings) == 1  # at most one every 5 minutes per stream
    assert "holds only 20 s of the 60 s retention" in warnings[0].getMessage()
