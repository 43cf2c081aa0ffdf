"""The in-process server the daemon starts: a generated key, real HTTP on loopback."""

from __future__ import annotations

import httpx

from watcher.server.embedded import run_embedded
from watcher.server.settings import ServerSettings
from watcher.server.streams import generate_api_key


def test_generated_keys_look_like_the_clouds() -> None:
    keys = {generate_api_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith("ovs-") and len(k) >= 36 for k in keys)


async def test_the_embedded_server_accepts_its_generated_key() -> None:
    async with run_embedded(ServerSettings()) as endpoint:
        assert endpoint.api_key.startswith("ovs-")
        headers = {"authorization": f"Bearer {endpoint.api_key}"}
        async with httpx.AsyncClient(base_url=endpoint.base_url, headers=headers,
                                     trust_env=False) as client:
            created = await client.post("/streams")
            assert created.status_code == 201, created.text
            wrong = await client.post("/streams", headers={"authorization": "Bearer ovs-x"})
            assert wrong.status_code == 401
