"""`watcher run` as a real process against a real server: it publishes, and SIGTERM cleans up."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from support.poll import eventually

from watcher.server.embedded import run_embedded
from watcher.server.settings import ServerSettings

WATCHER = str(Path(sys.executable).with_name("watcher"))


async def test_sigterm_deletes_the_daemons_streams_and_exits_0(tmp_path: Path) -> None:
    async with run_embedded(ServerSettings(ttl_seconds=10)) as endpoint:
        server = endpoint.app.state.server
        config = tmp_path / "watcher.yaml"
        config.write_text(
            "overshoot:\n"
            f"  base_url: {endpoint.base_url}\n"
            "  api_key: ${TEST_OVERSHOOT_KEY}\n"
            "streams:\n"
            "  - name: front\n"
            "    source: testsrc:size=320x240\n"
            "    fps: 5\n"
            "    width: 320\n"
            "    height: 240\n"
            "  - name: back\n"
            "    source: testsrc:size=320x240,seed=3\n"
            "    fps: 5\n"
            "    width: 320\n"
            "    height: 240\n"
            f"state:\n  path: {tmp_path / 'state.sqlite3'}\n")
        proc = await asyncio.create_subprocess_exec(
            WATCHER, "run", "-c", str(config), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TEST_OVERSHOOT_KEY": endpoint.api_key})
        try:
            def both_live() -> bool:
                streams = server.registry.all_active()
                return len(streams) == 2 and all(s.frames.next_index > 3 for s in streams)

            await eventually(both_live, 20)
            ids = [s.id for s in server.registry.all_active()]
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
        log = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert code == 0, log
        for stream_id in ids:
            stream = server.registry._streams[stream_id]
            assert (stream.state, stream.end_reason) == ("ended", "deleted"), log
        assert endpoint.api_key not in log
