"""A real :class:`~watcher.daemon.Daemon` run in the test's event loop from a config file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from watcher.config import load_config
from watcher.daemon import Daemon


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
