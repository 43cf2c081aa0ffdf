"""What the WHIP and LiveKit publishers share: waiting for a session to come up."""

from __future__ import annotations

import asyncio


async def wait_connected(connected: asyncio.Event, closed: asyncio.Event, timeout: float,
                         what: str) -> None:
    """Wait until ``connected`` is set; TimeoutError, or ConnectionError if ``closed`` first."""
    async with asyncio.timeout(timeout):
        up = asyncio.ensure_future(connected.wait())
        down = asyncio.ensure_future(closed.wait())
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            down.cancel()
    if not connected.is_set() or closed.is_set():
        raise ConnectionError(what)
