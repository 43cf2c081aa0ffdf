"""Helper process of bench/ingest_cpu.py: publish streams over WHIP until stdin closes.

    _publisher.py --targets '[{"url": ..., "token": ...}, ...]' [--fps 5] [--source scene]

Speaks JSON lines on stdout: ``{"event": "connected"}`` once every publisher
is connected, then ``{"event": "tick", ...}`` every second with each
publisher's sender statistics, and ``{"event": "stopped"}`` at the end.
Exits on stdin EOF, or after ``--max-seconds`` as a safety net.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

import _common
import _media

from watcher.media.whip import WhipPublisher


async def run(args: argparse.Namespace) -> None:
    targets = json.loads(args.targets)
    publishers: list[WhipPublisher] = []
    feeders: list[Any] = []
    try:
        for target in targets:
            track, feeder = _media.make_track(args.source, args.fps, args.spec)
            if feeder is not None:
                feeders.append(feeder)
            publisher = WhipPublisher(target["url"], target["token"], track, codec=args.codec)
            publishers.append(publisher)
            await publisher.start()
        await asyncio.gather(*(p.wait_connected() for p in publishers))
        _common.send({"event": "connected", "count": len(publishers)})
        stop = asyncio.create_task(_common.stdin_closed())
        deadline = time.monotonic() + args.max_seconds
        while not stop.done() and time.monotonic() < deadline:
            stats = [await _media.sender_stats(p) for p in publishers]
            _common.send({"event": "tick", "t": time.monotonic(), "publishers": stats,
                          "cpu": time.process_time()})
            await asyncio.wait({stop}, timeout=1.0)
        stop.cancel()
    except Exception as exc:
        _common.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        for publisher in publishers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(publisher.stop(), 10)
        for feeder in feeders:
            feeder.stop()
        _common.send({"event": "stopped"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", required=True, help="JSON list of {url, token}")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--spec", default=_media.DEFAULT_SPEC)
    parser.add_argument("--source", choices=["scene", "prerendered"], default="scene")
    parser.add_argument("--codec", default="video/VP8")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    _common.quiet_logs()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
