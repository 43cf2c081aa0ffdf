"""Waiting in tests for what happens, not for a length of time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout: float = 10.0,
                     interval: float = 0.05) -> Any:
    """Poll ``check`` (plain, or returning an awaitable) until it gives something truthy;
    return that. ``timeout`` only stops a test that would hang (TimeoutError)."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)
