"""An API server that can be stopped and started again on the same port, and a daemon on it.

The daemon is the real :class:`~watcher.daemon.Daemon` (keepers publishing over WebRTC,
engine, store, status listener); the API server is the embedded one, run apart from the
daemon, as a separate Overshoot-compatible server would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from watcher.config import load_config
from watcher.daemon import Daemon
from watcher.server.embedded import run_embedded
from watcher.server.settings import ServerSettings

API_KEY = "ovs_restartable_api_key"

CONFIG = """\
overshoot:
  base_url: http://127.0.0.1:{api_port}/v1beta
  api_key: {key}
  model: local/vision
state:
  path: {state}
status:
  enabled: true
  port: {status_port}
streams:
  - name: cam
    source: testsrc:size=160x120
    fps: {fps}
    width: 160
    height: 120
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RestartableApi:
    """The embedded server on a fixed port; :meth:`stop` and :meth:`start` at will."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._stack: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        stack = contextlib.AsyncExitStack()
        settings = ServerSettings(api_keys=[API_KEY], enable_vision=False)
        await stack.enter_async_context(run_embedded(settings, port=self.port))
        self._stack = stack

    async def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()


@dataclass
class DaemonOnApi:
    daemon: Daemon
    api: RestartableApi
    status_url: str

    async def readyz(self) -> tuple[int, dict]:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(self.status_url + "/readyz")
        return response.status_code, response.json()


@contextlib.asynccontextmanager
async def daemon_on_api(tmp: Path, *, fps: float = 5) -> AsyncIterator[DaemonOnApi]:
    api = RestartableApi()
    await api.start()
    status_port = free_port()
    path = tmp / "watcher.yaml"
    path.write_text(CONFIG.format(api_port=api.port, key=API_KEY, state=tmp / "state.sqlite3",
                                  status_port=status_port, fps=fps))
    daemon = Daemon(load_config(path), path)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        yield DaemonOnApi(daemon, api, f"http://127.0.0.1:{status_port}")
    finally:
        daemon.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        await api.stop()
