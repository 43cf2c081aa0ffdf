"""The daemon: connect to the API (or start the embedded server) and keep every stream live.

Everything it runs is entered on one ``AsyncExitStack`` so that shutdown
undoes start-up in reverse: keepers stop (deleting their streams) before the
HTTP client closes, and the embedded server stops last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from watcher.config import WatcherConfig
from watcher.engine.engine import RuleEngine
from watcher.engine.store import AlertStore
from watcher.keeper.keeper import StreamKeeper
from watcher.overshoot.client import OvershootClient
from watcher.server.embedded import run_embedded

log = logging.getLogger(__name__)

FIRST_FRAME_LOG_TIMEOUT = 30.0


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
        yield ApiTarget(endpoint.base_url, endpoint.api_key, embedded=True)


@contextlib.asynccontextmanager
async def api_client(config: WatcherConfig) -> AsyncIterator[tuple[OvershootClient,
                                                                   httpx.AsyncClient]]:
    """One shared HTTP client and the Overshoot client on top of it."""
    async with api_target(config) as target:
        timeout = httpx.Timeout(config.overshoot.timeout_seconds, connect=10.0)
        async with httpx.AsyncClient(timeout=timeout) as http:
            yield OvershootClient(target.base_url, target.api_key, http=http), http


class Daemon:
    """Runs until :meth:`request_stop`; then cleans up and returns."""

    def __init__(self, config: WatcherConfig) -> None:
        self.config = config
        self.keepers: dict[str, StreamKeeper] = {}
        self.engine: RuleEngine | None = None
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            client, http = await stack.enter_async_context(api_client(self.config))
            log.info("using the Overshoot API at %s", client.base_url)
            for spec in self.config.streams:
                if not spec.enabled:
                    log.info("stream %s is disabled", spec.name)
                    continue
                keeper = StreamKeeper(spec, client, http=http)
                self.keepers[spec.name] = keeper
                stack.push_async_callback(keeper.stop)
                keeper.start()
            log.info("starting %d stream(s)", len(self.keepers))
            store = AlertStore(self.config.state.path)
            stack.push_async_callback(store.close)
            self.engine = RuleEngine(self.config.rules, client=client, streams=self.keepers,
                                     store=store, default_model=self.config.overshoot.model)
            await self.engine.start()
            stack.push_async_callback(self.engine.stop)
            watch = asyncio.create_task(self._report_first_frames())
            try:
                await self._stop.wait()
            finally:
                watch.cancel()
            log.info("shutting down: deleting this daemon's streams")

    async def _report_first_frames(self) -> None:
        """Log when each stream is live, or that it is taking long."""
        async def one(keeper: StreamKeeper) -> None:
            try:
                stream_id = await keeper.wait_live(FIRST_FRAME_LOG_TIMEOUT)
            except TimeoutError:
                log.warning("stream %s is not live after %.0f s (state %s, %s)", keeper.name,
                            FIRST_FRAME_LOG_TIMEOUT, keeper.state,
                            keeper.last_error or "no error")
                return
            log.info("stream %s is live (%s)", keeper.name, stream_id)

        await asyncio.gather(*(one(k) for k in self.keepers.values()))
