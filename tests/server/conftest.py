"""Fixtures for driving the embedded server in-process through httpx.ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from support.frames import frame_pusher

from watcher.clock import ManualClock
from watcher.server.app import EmbeddedServer, create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

API_KEY = "ovs_test_key_1"
OTHER_KEY = "ovs_test_key_2"
BASE = "http://testserver/v1beta"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings() -> ServerSettings:
    return ServerSettings(api_keys=[API_KEY, OTHER_KEY], ttl_seconds=45, retention_seconds=600,
                          tombstone_seconds=60)


@pytest.fixture
def app(settings: ServerSettings, clock: ManualClock) -> FastAPI:
    return create_app(settings, clock=clock, backends=[FramesModel()])


@pytest.fixture
def server(app: FastAPI) -> EmbeddedServer:
    return app.state.server


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE,
                                 headers={"authorization": f"Bearer {API_KEY}"}) as c:
        yield c


@pytest.fixture
def push_frames(server: EmbeddedServer, clock: ManualClock) -> Callable[..., None]:
    return frame_pusher(server, clock)
