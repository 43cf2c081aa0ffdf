"""Helper process of bench/publish_cpu.py: the embedded server until stdin closes.

Serves the real app (``local/frames`` backend only) under uvicorn on a free
127.0.0.1 port with the default settings and API key ``_common.API_KEY``,
prints ``{"event": "ready", "base_url": ...}`` and exits on stdin EOF (or
after ``--max-seconds`` as a safety net).
"""

from __future__ import annotations

import argparse
import asyncio

import _common


async def run(max_seconds: float) -> None:
    async with _common.serve() as server:
        _common.send({"event": "ready", "base_url": server.base_url})
        try:
            await asyncio.wait_for(_common.stdin_closed(), max_seconds)
        except TimeoutError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    _common.quiet_logs()
    asyncio.run(run(args.max_seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
