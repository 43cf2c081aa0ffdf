"""The daemon's background loops: each runs as a task until the daemon cancels it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from watcher.clock import SystemClock
from watcher.config import WatcherConfig
from watcher.config.packs import included_files
from watcher.duration import format_duration
from watcher.engine.storehealth import MonitoredStore
from watcher.errors import WatcherError
from watcher.keeper.keeper import StreamKeeper

log = logging.getLogger("watcher.daemon")  # one logger for the whole daemon package

FIRST_FRAME_LOG_TIMEOUT = 30.0
WATCH_INTERVAL_S = 2.0
PRUNE_INTERVAL_S = 3600.0


async def report_first_frames(keepers: Mapping[str, StreamKeeper]) -> None:
    """Log when each stream is live, or that it is taking long, and when all are."""
    started = asyncio.get_running_loop().time()

    async def one(keeper: StreamKeeper) -> None:
        try:
            stream_id = await keeper.wait_live(FIRST_FRAME_LOG_TIMEOUT)
        except TimeoutError:
            log.warning("stream %s is not live after %.0f s (state %s, %s)", keeper.name,
                        FIRST_FRAME_LOG_TIMEOUT, keeper.state,
                        keeper.last_error or "no error")
            return
        log.info("stream %s is live (%s)", keeper.name, stream_id)

    started_keepers = list(keepers.values())
    await asyncio.gather(*(one(k) for k in started_keepers))
    live = sum(1 for k in started_keepers if k.stream_id is not None)
    log.info("%d of %d stream(s) live after %.1f s", live, len(started_keepers),
             asyncio.get_running_loop().time() - started)


async def prune_forever(store: MonitoredStore, keep_for_s: float) -> None:
    """Keep the state file from growing without bound (events carry JPEG snapshots)."""
    while True:
        keep_ms = round(keep_for_s * 1000)
        try:
            pruned = await store.prune(SystemClock().now_ms() - keep_ms)
        except WatcherError as exc:
            log.warning("could not prune old alert events: %s", exc)
        else:
            if pruned:
                log.info("pruned %d alert event(s) older than %s", pruned,
                         format_duration(keep_for_s))
        await asyncio.sleep(PRUNE_INTERVAL_S)


async def watch_files(path: Path, current: Callable[[], WatcherConfig],
                      reload: Callable[[], Awaitable[object]]) -> None:
    """Call ``reload`` when the config file at ``path`` (or a rule pack of the ``current``
    config) changes on disk."""
    seen = _mtimes(path, current())
    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        now = _mtimes(path, current())
        if now != seen:
            seen = now
            log.info("config changed on disk; reloading")
            await reload()
            seen = _mtimes(path, current())


def _mtimes(path: Path, config: WatcherConfig) -> dict[str, tuple[int, int]]:
    """Modification time and size of the config file and of every rule pack it includes
    (including files an ``include:`` glob has just started to match)."""
    files = {path, *(Path(r.origin.file) for r in config.rules if r.origin is not None),
             *included_files(config, path)}
    out = {}
    for file in files:
        with contextlib.suppress(OSError):
            stat = file.stat()
            out[str(file)] = (stat.st_mtime_ns, stat.st_size)
    return out
