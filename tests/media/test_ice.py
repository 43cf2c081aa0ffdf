"""The loopback ICE fallback: forced by env var, automatic on a host with only ``lo``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import pytest

from watcher.media import ice

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pristine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ice.ENV_VAR, raising=False)
    ice.restore_ice_candidates()
    yield
    ice.restore_ice_candidates()


def test_env_var_adds_loopback_candidates(pristine: None, monkeypatch: pytest.MonkeyPatch,
                                          ) -> None:
    original = aioice.ice.get_host_addresses
    assert "127.0.0.1" not in original(True, False)
    monkeypatch.setenv(ice.ENV_VAR, "1")
    assert ice.ensure_ice_candidates()
    patched = aioice.ice.get_host_addresses
    assert patched is not original
    assert ice.ensure_ice_candidates() and aioice.ice.get_host_addresses is patched  # idempotent
    addresses = patched(True, False)
    assert "127.0.0.1" in addresses
    assert set(original(True, False)) <= set(addresses)
    assert all(":" not in a for a in addresses)  # IPv6 only when asked for
    ice.restore_ice_candidates()
    assert aioice.ice.get_host_addresses is original


def test_nothing_changes_on_a_host_with_a_real_interface(pristine: None) -> None:
    if not ice.has_non_loopback_address():
        pytest.skip("this host has only loopback")
    original = aioice.ice.get_host_addresses
    assert not ice.ensure_ice_candidates()
    assert aioice.ice.get_host_addresses is original


SCRIPT = textwrap.dedent("""
    import asyncio, socket, sys
    import httpx, uvicorn
    from watcher.media import ice
    from watcher.media.testsrc import SyntheticScene
    from watcher.media.tracks import FrameTrack
    from watcher.media.whip import WhipPublisher
    from watcher.server.app import create_app
    from watcher.server.backends.frames import FramesModel
    from watcher.server.settings import ServerSettings

    async def main():
        assert not ice.has_non_loopback_address(), "expected a loopback-only namespace"
        app = create_app(ServerSettings(api_keys=["k"]), backends=[FramesModel()])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.02)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}/v1beta"
        async with httpx.AsyncClient(base_url=base, headers={"authorization": "Bearer k"}) as c:
            info = (await c.post("/streams")).json()
            track = FrameTrack(SyntheticScene(160, 120, fps=10), 10)
            publisher = WhipPublisher(info["publish"]["url"], info["publish"]["token"], track)
            await publisher.start()
            await publisher.wait_connected()
            for _ in range(100):
                status = (await c.get(f"/streams/{info['id']}")).json()
                if (status["last_frame_index"] or 0) >= 2:
                    break
                await asyncio.sleep(0.05)
            await publisher.stop()
        server.should_exit = True
        await task
        print("frames", status["last_frame_index"] + 1)

    asyncio.run(main())
""")


def _netns_available() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux-only")
def test_webrtc_in_a_loopback_only_network_namespace(tmp_path: Path) -> None:
    if not _netns_available():
        pytest.skip("cannot create a network namespace here (needs root and unshare)")
    script = tmp_path / "lo_only.py"
    script.write_text(SCRIPT)
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "{script}"'],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frames = int(result.stdout.split()[-1])
    assert frames >= 3
