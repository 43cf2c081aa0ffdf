"""The recording a backtest replays: its video files, their length, and their frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import av

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".h264", ".mjpeg")


def video_files(path: str | Path) -> list[Path]:
    """``path`` itself, or the video files of a folder in name order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no video files (looked for "
                                    f"{', '.join(VIDEO_SUFFIXES)})")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return [path]


def probe_duration(files: Sequence[Path]) -> float:
    total = 0.0
    for path in files:
        with contextlib.suppress(av.error.FFmpegError), av.open(str(path)) as container:
            if container.duration:
                total += container.duration / 1_000_000
    return total


async def iter_frames(files: Sequence[Path], fps: float,
                      ) -> AsyncIterator[tuple[float, av.VideoFrame]]:
    """``(video seconds, frame)`` at most ``fps`` per second, across ``files`` in order."""
    offset = 0.0
    next_t = 0.0
    for path in files:
        last = 0.0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / rate
                last = max(last, t)
                if offset + t + 1e-6 < next_t:
                    continue
                next_t = offset + t + 1 / fps
                yield offset + t, frame
                if index % 16 == 0:
                    await asyncio.sleep(0)
        offset += last + 1 / rate
