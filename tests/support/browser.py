"""A real headless Chromium (Debian's ``chromium``) driven by Playwright, with a fake camera.

Where no browser is installed the test is skipped with the reason, except under
``CI=true``, where that is a failure: a skipped browser test tests nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from support.skips import skip_or_fail

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def _executable() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


@contextlib.asynccontextmanager
async def chromium(*, fake_camera: bool = False) -> AsyncIterator[Any]:
    """A launched Chromium browser (Playwright ``Browser``)."""
    executable = _executable()
    if executable is None:
        skip_or_fail(f"no browser: {CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        skip_or_fail("the playwright package is not installed (pip install -e '.[dev]')")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=ARGS + (FAKE_CAMERA if fake_camera else []))
        try:
            yield browser
        finally:
            await browser.close()


def screenshot_dir(tmp_path: Path) -> Path:
    """Where page tests save screenshots: ``WATCHER_SCREENSHOTS`` or the test's tmp dir."""
    target = Path(os.environ.get("WATCHER_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target
