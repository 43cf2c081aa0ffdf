"""The API server goes away: /readyz says so at once, and is ready again after recovery."""

from __future__ import annotations

from pathlib import Path

import httpx
from support.apiserver import daemon_on_api
from support.poll import eventually


async def test_readyz_follows_the_api_server_down_and_back(tmp_path: Path) -> None:
    async with daemon_on_api(tmp_path) as d:
        keeper = d.daemon.keepers["cam"]
        first = await keeper.wait_live(30)

        async def status(code: int) -> dict | None:
            got, body = await d.readyz()
            return body if got == code else None

        ready = await eventually(lambda: status(200), timeout=30, interval=0.1)
        assert ready["streams"] == {"cam": True} and ready["store"] == {"ready": True}

        await d.api.stop()
        # the next probe reads the stream's status from the API: no waiting for a lease
        down = await status(503)
        assert down is not None, "unready at the first probe after the server stopped"
        [why] = down["not_ready"]
        assert why["stream"] == "cam"
        assert why["reason"].startswith(("the API is unreachable", "the API did not answer",
                                         "publisher", "state "))
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(d.status_url + "/readyz?format=text")).text
            health = await http.get(d.status_url + "/healthz")
        assert text.startswith("not ready\nstream cam: not ready: ")
        assert health.status_code == 200  # the process itself is fine

        await d.api.start()
        back = await eventually(lambda: status(200), timeout=90, interval=0.2)
        assert back["streams"] == {"cam": True}
        assert keeper.stream_id not in (None, first)  # a new stream on the new server
