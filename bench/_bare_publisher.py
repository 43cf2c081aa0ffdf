"""Child of bench/publish_cpu.py: the bare aiortc publisher of a looping file.

The baseline ``watcher run`` is compared with: a ``MediaStreamTrack`` whose ``recv()``
decodes the next frame of the file (PyAV, default decoder threads; looped by seeking,
as ``MediaPlayer(loop=True)`` cannot with av 18), stamps it at ``--fps`` and hands the
``av.VideoFrame`` straight to aiortc's encoder. No scaling, no colour conversion, no
mailbox thread. Signalling is ``WhipPublisher`` (one POST; aiortc underneath).

    _bare_publisher.py --url URL --token TOKEN --file clip.mp4 [--fps 5] [--codec VP8]

Speaks JSON lines on stdout (``connected``, then ``tick`` with sender statistics every
second) and exits on stdin EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator
from fractions import Fraction

import _common
import _media
import av
from aiortc.mediastreams import MediaStreamTrack

from watcher.media.whip import WhipPublisher

CLOCK = 90_000


class FileTrack(MediaStreamTrack):
    """Decodes a file frame by frame at ``fps``, looping it."""

    kind = "video"

    def __init__(self, path: str, fps: float) -> None:
        super().__init__()
        self.container = av.open(path)
        self.fps = fps
        self.frames = self._decode()
        self.start: float | None = None
        self.n = 0

    def _decode(self) -> Iterator[av.VideoFrame]:
        stream = self.container.streams.video[0]
        while True:
            yield from self.container.decode(stream)
            self.container.seek(0)

    async def recv(self) -> av.VideoFrame:  # type: ignore[override]
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.n / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        frame = next(self.frames)
        frame.pts = round(self.n * CLOCK / self.fps)
        frame.time_base = Fraction(1, CLOCK)
        self.n += 1
        return frame


async def run(args: argparse.Namespace) -> None:
    track = FileTrack(args.file, args.fps)
    publisher = WhipPublisher(args.url, args.token, track, codec=f"video/{args.codec.upper()}")
    try:
        await publisher.start()
        await publisher.wait_connected()
        _common.send({"event": "connected"})
        stop = asyncio.create_task(_common.stdin_closed())
        while not stop.done():
            _common.send({"event": "tick", "t": time.monotonic(),
                          "stats": await _media.sender_stats(publisher)})
            await asyncio.wait({stop}, timeout=1.0)
    except Exception as exc:
        _common.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(publisher.stop(), 10)
        track.container.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--codec", default="VP8")
    args = parser.parse_args()
    _common.quiet_logs()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
