"""Fixtures for keeper tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.keeper import KEY, Harness, make_harness

from watcher.clock import SystemClock
from watcher.server.settings import ServerSettings


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = await make_harness(ServerSettings(api_keys=[KEY], ttl_seconds=6), SystemClock())
    yield h
    for keeper in h.keepers:
        await keeper.stop()
    await h.server.aclose()
    await h.http.aclose()


