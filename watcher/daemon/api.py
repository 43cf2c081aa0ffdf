"""The configured Overshoot API, and the client the daemon and the tools talk to it with.

With ``overshoot.base_url: embedded`` the server runs in this process for as
long as the client is open; either way the daemon talks HTTP/WebRTC to it,
exactly as it talks to the cloud.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx

from watcher.config import WatcherConfig
from watcher.overshoot.client import OvershootClient, Policies
from watcher.server.embedded import run_embedded


@dataclass(frozen=True, slots=True)
class ApiTarget:
    base_url: str
    api_key: str | None
    embedded: bool


@contextlib.asynccontextmanager
async def api_target(config: WatcherConfig) -> AsyncIterator[ApiTarget]:
    """The configured API; for ``embedded``, a server running in this process until exit."""
    overshoot = config.overshoot
    if not overshoot.is_embedded:
        key = overshoot.api_key.get_secret_value() if overshoot.api_key else None
        yield ApiTarget(overshoot.base_url, key, embedded=False)
        return
    embedded = overshoot.embedded
    extra_keys = [overshoot.api_key.get_secret_value()] if overshoot.api_key else []
    async with run_embedded(embedded.server_settings(extra_keys), host=embedded.host,
                            port=embedded.port) as endpoint:
        # With a configured key the daemon's streams are that key's: whoever holds it
        # (an operator, a cluster peer's tests) sees them in GET /streams.
        yield ApiTarget(endpoint.base_url, extra_keys[0] if extra_keys else endpoint.api_key,
                        embedded=True)


@contextlib.asynccontextmanager
async def api_client(config: WatcherConfig) -> AsyncIterator[tuple[OvershootClient,
                                                                   httpx.AsyncClient]]:
    """One shared HTTP client and the Overshoot client on top of it."""
    async with api_target(config) as target:
        seconds = config.overshoot.timeout_seconds
        async with httpx.AsyncClient(timeout=httpx.Timeout(seconds, connect=10.0)) as http:
            yield OvershootClient(target.base_url, target.api_key, http=http,
                                  policies=request_policies(seconds)), http


def request_policies(timeout_s: float) -> Policies:
    """The retry budget, with ``overshoot.timeout_seconds`` as the deadline of a chat
    completion and as the upper bound for the (shorter) stream calls."""
    defaults = Policies()
    return Policies(
        create=replace(defaults.create, timeout=min(defaults.create.timeout, timeout_s)),
        keepalive=replace(defaults.keepalive,
                          timeout=min(defaults.keepalive.timeout, timeout_s)),
        read=replace(defaults.read, timeout=min(defaults.read.timeout, timeout_s)),
        chat=replace(defaults.chat, timeout=timeout_s),
    )
