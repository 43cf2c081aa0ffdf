"""A real embedded server (in-process ASGI for HTTP, real WebRTC for media) for keeper tests."""


from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import httpx

from watcher.clock import ManualClock, SystemClock
from watcher.keeper.keeper import StreamKeeper
from watcher.keeper.spec import KeeperTimings
from watcher.overshoot.client import (
    CREATE_POLICY,
    KEEPALIVE_POLICY,
    READ_POLICY,
    OvershootClient,
    Policies,
)
from watcher.server.app import EmbeddedServer, create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

KEY = "ovs_keeper_tests"
BASE = "http://keeper.test/v1beta"
FAST = Policies(
    create=replace(CREATE_POLICY, delays=(0.05, 0.1)),
    keepalive=replace(KEEPALIVE_POLICY, delays=(0.05,)),
    read=replace(READ_POLICY, delays=(0.05,)),
)


@dataclass
class Spec:
    name: str = "cam"
    source: str = "testsrc:size=160x120,clock=0"
    loop: bool = False
    fps: float = 10
    width: int = 160
    height: int = 120
    pull: bool = False
    passthrough: str = "never"


@dataclass
class Harness:
    server: EmbeddedServer
    http: httpx.AsyncClient
    client: OvershootClient
    clock: ManualClock | SystemClock
    keepers: list[StreamKeeper]

    def keeper(self, spec: Spec | None = None, *, sleep=asyncio.sleep,
               timings: KeeperTimings | None = None, **options) -> StreamKeeper:
        keeper = StreamKeeper(
            spec or Spec(), self.client, http=self.http, clock=self.clock, sleep=sleep,
            **options,
            timings=timings or KeeperTimings(check_interval=0.1, first_frame_timeout=10,
                                             stale_after=1.0,
                                             recreate_backoff=(0.05, 0.5),
                                             publisher_backoff=(0.05, 0.5)))
        self.keepers.append(keeper)
        return keeper

    def stream(self, stream_id: str):
        return self.server.registry._streams[stream_id]


async def make_harness(settings: ServerSettings, clock: ManualClock | SystemClock,
                       sleep=asyncio.sleep) -> Harness:
    app = create_app(settings, clock=clock if isinstance(clock, ManualClock) else None,
                     backends=[FramesModel()])
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
    client = OvershootClient(BASE, KEY, http=http, policies=FAST, sleep=sleep, jitter=0)
    return Harness(app.state.server, http, client, clock, [])

