"""For bench/publish_cpu.py: ``watcher run`` and a bare aiortc publisher of one file, side by side.

Both publish the same looping clip (``_clip.render_clip``) at the same frame rate to the
same embedded server process, at the same time, so machine load hits both alike:

* ``watcher run -c cfg`` (a real daemon: source thread, keeper, lease renewals, status
  listener off, no rules), its stream's ``source`` the clip with ``loop: true``;
* ``_bare_publisher.py``: decode, stamp, encode; nothing else.

Each process's CPU time (all threads, from ``/proc``) is read over the same window, and
each stream's stored frames are counted from the server's ``last_frame_index``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _clip
import _common

WATCHER = str(Path(sys.executable).with_name("watcher"))


def process_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def watcher_config(base_url: str, clip: Path, fps: float, width: int, height: int,
                   state: Path, extra: str = "") -> str:
    return (f"overshoot:\n  base_url: {base_url}\n  api_key: {_common.API_KEY}\n"
            f"state:\n  path: {state}\n"
            f"streams:\n  - name: cam\n    source: {clip}\n    loop: true\n"
            f"    fps: {fps:g}\n    width: {width}\n    height: {height}\n{extra}")


async def _next_tick(bare: Any) -> dict[str, Any]:
    """The bare publisher's next statistics line from now on (it sends one a second)."""
    now = time.monotonic()
    return await bare.message(timeout=10, want=lambda m: m.get("event") == "tick"
                              and m["t"] >= now)


async def _streams(client: Any) -> list[dict[str, Any]]:
    return (await client.get("/streams")).raise_for_status().json()["data"]


async def _index(client: Any, stream_id: str) -> int:
    status = (await client.get(f"/streams/{stream_id}")).raise_for_status().json()
    return status["last_frame_index"] if status["last_frame_index"] is not None else -1


async def compare(client: Any, server_pid: int, *, fps: float, seconds: float, settle: float,
                  clip_seconds: float, codec: str = "VP8", stream_extra: str = "",
                  label: str = "watcher run", path: str = "transcode",
                  clip_bitrate: int = 500_000, clips: bool = True) -> dict[str, Any]:
    """One side-by-side window; raises when either side never stores a frame.

    ``clips=False`` turns the daemon's evidence clips off (``clips: enabled: false``): a
    duty of ``watcher run`` (a JPEG of every published frame) the bare publisher lacks.
    """
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp:
        clip = _clip.render_clip(Path(tmp) / "clip.mp4", seconds=clip_seconds, fps=fps,
                                 bitrate=clip_bitrate)
        clip_bytes = clip.stat().st_size  # what a passthrough publisher sends, looped
        created = (await client.post("/streams")).raise_for_status().json()
        bare_id = created["id"]
        config = Path(tmp) / "watcher.yaml"
        config.write_text(watcher_config(client.base_url.__str__().rstrip("/"), clip, fps,
                                         640, 480, Path(tmp) / "state.sqlite3", stream_extra)
                          + ("" if clips else "clips:\n  enabled: false\n"))
        log_path = Path(tmp) / "watcher.log"
        log_file = log_path.open("wb")  # once, before the window
        daemon = await asyncio.create_subprocess_exec(
            WATCHER, "run", "-c", str(config), stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file, stderr=log_file, env={**os.environ, "WATCHER_LOG_LEVEL": "INFO"})
        log_file.close()
        try:
            async with _common.child("_bare_publisher.py", "--url", created["publish"]["url"],
                                     "--token", created["publish"]["token"], "--file",
                                     str(clip), "--fps", f"{fps:g}", "--codec", codec,
                                     name="bare publisher") as bare:
                await bare.message(timeout=60, want=lambda m: m.get("event") == "connected")
                watcher_id = await _wait_for_watcher_stream(client, bare_id, daemon, log_path)
                deadline = time.monotonic() + 30
                while min(await _index(client, bare_id), await _index(client, watcher_id)) < 0:
                    if time.monotonic() > deadline:
                        raise TimeoutError("a stream stored no frame within 30 s")
                    await asyncio.sleep(0.2)
                await asyncio.sleep(settle)
                sent0 = await _next_tick(bare)
                index0 = {s: await _index(client, s) for s in (watcher_id, bare_id)}
                pids = [daemon.pid, bare.pid, server_pid]
                window = await _common.measure_cpu(seconds, pids=pids)
                index1 = {s: await _index(client, s) for s in (watcher_id, bare_id)}
                sent1 = await _next_tick(bare)
                first_picture = {side: await _first_picture_s(client, sid) for side, sid in
                                 (("watcher", watcher_id), ("bare", bare_id))}
                threads = {"watcher": process_threads(daemon.pid),
                           "bare": process_threads(bare.pid)}
                rss = {"watcher": process_rss_mb(daemon.pid), "bare": process_rss_mb(bare.pid)}
        finally:
            with contextlib.suppress(ProcessLookupError):
                daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(daemon.wait(), 20)
            except TimeoutError:
                daemon.kill()
                await daemon.wait()
            with contextlib.suppress(Exception):
                await client.delete(f"/streams/{bare_id}")
        log_text = await asyncio.to_thread(log_path.read_text, errors="replace")
    wall = window.wall
    watcher_cpu = (window.others or {})[daemon.pid]
    bare_cpu = (window.others or {})[bare.pid]
    return {
        "label": label, "path": path, "clips": clips, "fps": fps, "codec": codec, "seconds": wall,
        "clip_kbps": clip_bitrate / 1000,
        "clip_file_kbps": 8 * clip_bytes / clip_seconds / 1000,
        "bare_sent_kbps": 8 * (sent1["stats"]["bytes_sent"] - sent0["stats"]["bytes_sent"])
        / max(1e-9, sent1["t"] - sent0["t"]) / 1000,
        "watcher_path": ("passthrough" if "H.264 passthrough" in log_text else
                         "transcode"),
        "first_picture_s": first_picture,
        "watcher_cpu_s": watcher_cpu, "bare_cpu_s": bare_cpu,
        "watcher_percent": 100 * watcher_cpu / wall, "bare_percent": 100 * bare_cpu / wall,
        "ratio": watcher_cpu / bare_cpu if bare_cpu else float("inf"),
        "server_percent": window.others_percent(server_pid),
        "watcher_stored_fps": (index1[watcher_id] - index0[watcher_id]) / wall,
        "bare_stored_fps": (index1[bare_id] - index0[bare_id]) / wall,
        "threads": threads, "rss_mb": rss,
        "machine_busy_cores": window.machine_busy_cores,
    }


async def _first_picture_s(client: Any, stream_id: str) -> float | None:
    """Seconds from the stream's creation to its first stored frame (server clock)."""
    status = (await client.get(f"/streams/{stream_id}")).raise_for_status().json()
    if status["first_frame_at_ms"] is None:
        return None
    return (status["first_frame_at_ms"] - status["created_at_ms"]) / 1000


async def _wait_for_watcher_stream(client: Any, bare_id: str, daemon: Any,
                                   log_path: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon.returncode is not None:
            tail = await asyncio.to_thread(log_path.read_text, errors="replace")
            raise RuntimeError(f"watcher run exited with code {daemon.returncode}: "
                               + tail[-2000:])
        for stream in await _streams(client):
            if stream["id"] != bare_id and stream["state"] == "active":
                return str(stream["id"])
        await asyncio.sleep(0.2)
    raise TimeoutError("watcher run created no stream within 60 s")
