"""A real :class:`~watcher.daemon.Daemon` run in the test's event loop from a config file,
and the ``watcher`` command run as a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from support.poll import eventually

from watcher.config import load_config
from watcher.daemon import Daemon

WATCHER = str(Path(sys.executable).with_name("watcher"))


@contextlib.asynccontextmanager
async def running_daemon(path: Path, *, ready_s: float = 30, stop_s: float = 30,
                         watch: bool = False) -> AsyncIterator[Daemon]:
    """The daemon of the config at ``path``, once everything has started; asked to stop
    (and waited for) at the end. ``watch``: reload when the file changes."""
    daemon = Daemon(load_config(path), path)
    task = asyncio.create_task(daemon.run(watch=watch))
    try:
        await asyncio.wait_for(daemon.ready.wait(), ready_s)
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, stop_s)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


@contextlib.asynccontextmanager
async def running_watcher(args: list[str], ready_url: str, log: Path,
                          env: dict[str, str] | None = None,
                          headers: dict[str, str] | None = None,
                          ) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``watcher ARGS`` (output to ``log``) until the block exits; ready once
    ``ready_url`` answers 200; terminated (then killed) at the end."""
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            WATCHER, *args, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
            env={**os.environ, **(env or {})})
    try:
        async with httpx.AsyncClient(timeout=5, headers=headers) as client:
            async def answers() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"watcher exited {proc.returncode}: {tail(log)}")
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(ready_url)).status_code == 200
                return False
            await eventually(answers, 60, 0.2)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
