"""`watcher serve` as a real process: its generated key, its limits and CORS flags."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from support.camera import MjpegCamera
from support.receivers import free_port

from watcher.media.testsrc import SyntheticScene

WATCHER = str(Path(sys.executable).with_name("watcher"))
PAGE = "http://127.0.0.1:3000"


@contextlib.asynccontextmanager
async def serve(*flags: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """Run ``watcher serve`` with ``flags``; yield a client of its API and the printed key."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "WATCHER_API_KEYS"}
    proc = await asyncio.create_subprocess_exec(
        WATCHER, "serve", "--port", str(port), *flags, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            first = (await proc.stdout.readline()).decode()
            assert first.startswith("No API key given"), first
            key = (await proc.stdout.readline()).decode().strip()
        base = f"http://127.0.0.1:{port}/v1beta"
        async with httpx.AsyncClient(base_url=base, trust_env=False,
                                     headers={"authorization": f"Bearer {key}"}) as client:
            async with asyncio.timeout(60):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/models")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            yield client, key
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_serve_generates_an_ovs_key_and_applies_its_limits() -> None:
    flags = ("--max-streams-per-key", "1", "--cors-origin", PAGE, "--pull-connect-timeout", "1")
    async with serve(*flags) as (client, key):
        assert key.startswith("ovs-") and len(key) >= 36
        created = await client.post("/streams")
        assert created.status_code == 201, created.text
        over = await client.post("/streams")
        assert over.status_code == 429
        assert "max_streams_per_key 1" in over.json()["detail"]
        preflight = await client.options("/streams/x/whip", headers={
            "origin": PAGE, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == PAGE
        await client.delete(f"/streams/{created.json()['id']}")
        private = await client.post("/streams", json={"source": {
            "type": "rtsp", "url": "rtsp://admin:secret@127.0.0.1:554/stream1"}})
        assert private.status_code == 422
        assert "loopback address" in private.json()["detail"]


async def test_serve_allow_private_sources_pulls_a_lan_camera() -> None:
    camera = MjpegCamera(SyntheticScene(width=160, height=120, fps=10, noise=0))
    camera.start()
    try:
        async with serve("--allow-private-sources") as (client, _):
            created = await client.post("/streams", json={"source": {"type": "hls",
                                                                     "url": camera.url}})
            assert created.status_code == 201, created.text
            assert created.json()["source"] == {"type": "hls"}
    finally:
        camera.stop()
