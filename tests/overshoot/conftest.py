"""Fixtures for the Overshoot client: the embedded server over ASGI, and scripted transports.

Test modules cannot import this file (pytest runs with ``--import-mode=importlib``),
so what they need is handed out as fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI
from support.frames import frame_pusher

from watcher.clock import ManualClock
from watcher.overshoot.client import OvershootClient
from watcher.server.app import EmbeddedServer, create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

API_KEY = "ovs_client_key_alpha_7f3a9c"
OTHER_KEY = "ovs_client_key_bravo_2d8e41"
BASE = "http://testserver/v1beta"


class FakeSleep:
    """Records the delays the client asked to wait, without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


Step = httpx.Response | Exception


@dataclass
class Script:
    """A MockTransport answering each request with the next scripted response or error."""

    steps: list[Step]
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.steps:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def other_key() -> str:
    return OTHER_KEY


@pytest.fixture
def base_url() -> str:
    return BASE


@pytest.fixture
def sleeps() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(clock: ManualClock) -> FastAPI:
    settings = ServerSettings(api_keys=[API_KEY, OTHER_KEY], ttl_seconds=45,
                              retention_seconds=600, tombstone_seconds=60,
                              allow_private_sources=True, pull_connect_timeout_seconds=10)
    return create_app(settings, clock=clock, backends=[FramesModel()])


@pytest.fixture
def server(app: FastAPI) -> EmbeddedServer:
    return app.state.server


@pytest.fixture
async def make_client(app: FastAPI, sleeps: FakeSleep,
                      ) -> AsyncIterator[Callable[[str | None], OvershootClient]]:
    """Build clients of the embedded server for a given key (closed at teardown)."""
    clients: list[OvershootClient] = []

    def make(key: str | None = API_KEY) -> OvershootClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = OvershootClient(BASE, key, transport=transport, sleep=sleeps, jitter=0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: Callable[[str | None], OvershootClient]) -> OvershootClient:
    return make_client(API_KEY)


@pytest.fixture
async def scripted(sleeps: FakeSleep,
                   ) -> AsyncIterator[Callable[..., tuple[OvershootClient, Script]]]:
    """``scripted(*steps)`` -> a client whose transport plays ``steps`` in order."""
    clients: list[OvershootClient] = []

    def make(*steps: Step, jitter: float = 0) -> tuple[OvershootClient, Script]:
        script = Script(list(steps))
        client = OvershootClient(BASE, API_KEY, transport=httpx.MockTransport(script.handler),
                                 sleep=sleeps, jitter=jitter)
        clients.append(client)
        return client, script

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def push_frames(server: EmbeddedServer, clock: ManualClock) -> Callable[..., None]:
    return frame_pusher(server, clock)
