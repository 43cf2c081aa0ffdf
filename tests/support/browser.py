"""Headless Chromium (Debian's ``chromium`` package) driven by Playwright, for page tests.

The browser is never downloaded: Playwright starts ``/usr/bin/chromium``
(``WATCHER_TEST_CHROMIUM`` overrides the path). Without it, or without the
``playwright`` package, the tests that need it skip with the reason, except
under ``CI=true``, where that is a failure (``.ci/run`` installs chromium).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("WATCHER_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def unavailable(reason: str) -> None:
    message = f"no browser for page tests: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        unavailable(f"the playwright package is not installed ({exc})")
        raise AssertionError("unreachable") from exc
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (one stat, before any I/O)
        unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def screenshot_dir(tmp_path: Path) -> Path:
    """Where page tests save screenshots: ``WATCHER_SCREENSHOTS`` or the test's tmp dir."""
    target = Path(os.environ.get("WATCHER_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target
