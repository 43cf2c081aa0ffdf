"""Run the embedded server in this process, on a free loopback port.

The daemon still talks to it over HTTP and WebRTC, exactly as to the cloud;
only the process is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from watcher.logs import register_secret
from watcher.server.app import API_PREFIX, create_app
from watcher.server.settings import ServerSettings
from watcher.server.streams import generate_api_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddedEndpoint:
    base_url: str
    api_key: str
    app: FastAPI


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the daemon."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def run_embedded(settings: ServerSettings | None = None, *, host: str = "127.0.0.1",
                       port: int = 0) -> AsyncIterator[EmbeddedEndpoint]:
    """Serve the API until the block exits; yields its base URL and an API key."""
    settings = settings or ServerSettings()
    key = generate_api_key()
    register_secret(key)
    settings = settings.model_copy(update={"api_keys": [*settings.api_keys, SecretStr(key)]})
    app = create_app(settings)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                    access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(), name="embedded-server")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the embedded server stopped while starting")
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        base_url = f"http://{host}:{bound}{API_PREFIX}"
        log.info("embedded server listening at %s", base_url)
        yield EmbeddedEndpoint(base_url, key, app)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
