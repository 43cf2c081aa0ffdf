"""Real state-store faults for tests: another process locking the SQLite file, a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from support.skips import skip_or_fail

_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
for attempt in range(600):  # SQLite may say busy at once (WAL recovery, a checkpoint)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        break
    except sqlite3.OperationalError:
        time.sleep(0.1)
else:
    raise SystemExit("could not take the lock")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
conn.close()
"""


class ExclusiveLock:
    """Another process holds ``BEGIN EXCLUSIVE`` on the SQLite file until :meth:`release`.

    Used as ``async with``: taking the lock may wait for a write in flight, which
    needs the event loop to finish, so nothing here blocks the loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: asyncio.subprocess.Process | None = None

    async def acquire(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LOCKER, str(self.path), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = (await self.proc.stdout.readline()).decode()
        if line.strip() != "locked":
            self.proc.kill()
            raise RuntimeError(f"could not lock {self.path}: {line!r}")

    async def release(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 30)

    async def __aenter__(self) -> ExclusiveLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``directory`` (needs root); skips (fails on CI) if not."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                           str(directory)], capture_output=True, text=True)
    if done.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs (root needed): {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) == 0:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler
