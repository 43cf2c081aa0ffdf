"""One daemon per SQLite state file, enforced with real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from support.poll import eventually

WATCHER = str(Path(sys.executable).with_name("watcher"))


def write_config(tmp: Path, state: Path) -> Path:
    path = tmp / "watcher.yaml"
    path.write_text(f"overshoot:\n  base_url: embedded\nstate:\n  path: {state}\n")
    return path


async def start(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        WATCHER, "run", "-c", str(config), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ))


async def test_a_second_daemon_on_the_same_file_exits_naming_file_and_pid(
        tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite3"
    config = write_config(tmp_path, state)
    first = await start(config)
    try:
        lock = Path(f"{state}.lock")
        await eventually(lambda: lock.exists() and lock.read_text().strip() == str(first.pid),
                         30)
        second = await start(config)
        async with asyncio.timeout(60):  # generous: it exits before starting anything
            code = await second.wait()
        err = (await second.stderr.read()).decode()  # type: ignore[union-attr]
        assert code == 1, err
        assert str(state) in err and f"pid {first.pid}" in err, err
        assert first.returncode is None  # the first one runs on, untouched

        # The kernel drops the lock with its holder, however it dies: kill -9 frees it.
        first.send_signal(signal.SIGKILL)
        await first.wait()
        third = await start(config)
        try:
            await eventually(lambda: lock.read_text().strip() == str(third.pid), 30)
            third.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                assert await third.wait() == 0
        finally:
            if third.returncode is None:
                third.kill()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
