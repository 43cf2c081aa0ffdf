"""The console in headless Chromium against a real running daemon.

A synthetic camera published over real WebRTC, a rule asked every second of a
scripted model, a real webhook receiver, the real status listener: the tests
click through the pages as a person would and check what the receiver, the
store and the export see. Screenshots of every page go to ``WATCHER_SCREENSHOTS``
(or the test's tmp dir).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import chromium, screenshot_dir
from support.console import RULE, Console, running_console
from support.poll import eventually

from watcher.cli import main
from watcher.engine.silences import AlertLabels
from watcher.engine.state import Kind, Status

SCRIPT = "<script>alert(1)</script>"
TOKEN = "console-test-token-5f1e2d"


def kinds(c: Console, kind: str) -> list[dict[str, Any]]:
    return [e for e in c.hook_events() if e["kind"] == kind]


async def new_page(browser: Any, width: int = 1100, height: int = 900) -> tuple[Any, list[str]]:
    page = await browser.new_page(viewport={"width": width, "height": height})
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    return page, dialogs


async def test_the_console_shows_plays_silences_acks_and_exports(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shots = screenshot_dir(tmp_path)
    async with running_console(tmp_path) as c, chromium() as browser:
        page, dialogs = await new_page(browser)
        c.model.set(alarm=True, description=f"{SCRIPT} the door is open")
        await eventually(lambda: kinds(c, "firing") and kinds(c, "repeat"), 60)
        [firing] = kinds(c, "firing")
        assert firing["event_url"] == f"https://watcher.example.com/events/{firing['event_id']}"

        # The timeline shows the fired alert with its thumbnail, the answer as text.
        await page.goto(c.url + "/")
        row = page.locator("li.event.kind-firing").first
        await row.wait_for()
        assert f"{RULE} on lobby" in await row.inner_text()
        thumb = await row.locator(".thumb img").element_handle()
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb)
        assert SCRIPT in await row.locator(".answer").inner_text()
        assert "hook: sent" in await row.locator(".deliveries").inner_text()
        await page.keyboard.press("j")
        assert await page.evaluate("document.activeElement.classList.contains('open')")
        await page.screenshot(path=shots / "timeline.png")

        # The event page: the answer shows as text and runs nothing; the clip plays.
        await row.locator("a.open").click()
        await page.wait_for_url("**/events/*")
        event_url = page.url
        main_text = await page.locator("main").inner_text()
        assert SCRIPT in main_text and "Is the door open?" in main_text
        assert "ovs://streams/" in main_text and "100 in, 12 out" in main_text
        await page.wait_for_function(
            "() => { const v = document.getElementById('clip');"
            " return v && v.readyState >= 2 && v.duration > 0; }", timeout=60_000)
        await page.screenshot(path=shots / "event.png")

        # Acknowledge: repeat_every stops for this episode.
        await page.get_by_role("button", name="Acknowledge").click()
        await page.get_by_text("acknowledged", exact=True).wait_for()
        await c.evaluations(1)
        repeats = len(kinds(c, "repeat"))
        await c.evaluations(5)  # more than twice repeat_every
        assert len(kinds(c, "repeat")) == repeats
        assert c.runner().state.status is Status.FIRING

        # Silence like this: the next firing is recorded, marked silenced, and not sent.
        await page.goto(event_url)
        await page.get_by_role("button", name="Silence like this").click()
        await page.get_by_text("created").wait_for()
        sent_before = len(c.hook.requests)
        episode = c.runner().state.episode
        c.model.set(alarm=False, description="closed")
        await eventually(lambda: c.runner().state.status is Status.RESOLVED, 30)
        c.model.set(alarm=True, description="open again")
        await eventually(lambda: c.runner().state.episode == episode + 1, 30)
        store = c.daemon.store
        [fired] = await store.events(limit=1, rule=RULE, status="firing")
        assert fired.kind is Kind.FIRING and fired.silenced_by and not fired.notify
        assert await store.deliveries_for_event(fired.id) == []
        await c.evaluations(2)
        assert len(c.hook.requests) == sent_before
        await page.goto(c.url + "/?silenced=true")
        silenced_row = page.locator(f"li.event.silenced a.open[href='/events/{fired.id}']")
        await silenced_row.wait_for()
        assert "silenced" in await page.locator("li.event.silenced").first.inner_text()

        # Mark the first alert a false alarm; the export has it.
        await page.goto(event_url)
        await page.get_by_label("Note").fill("a shadow on the door")
        await page.get_by_role("button", name="Mark false alarm").click()
        await page.get_by_text("feedback saved").wait_for()
        code = await asyncio.to_thread(main, ["alerts", "-c", str(c.config_path), "--feedback",
                                              "--json"])
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
        assert code == 0 and len(lines) == 1
        [label] = lines
        assert (label["label"], label["rule"], label["stream"], label["note"]) == (
            "false_alarm", RULE, "lobby", "a shadow on the door")
        assert label["start"] is not None and label["end"] >= label["start"]
        assert label["start_at"] <= label["end_at"]

        # The camera's frame changes over time.
        await page.goto(c.url + "/cameras")
        frame = page.locator("img.frame")
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                     arg=await frame.element_handle())
        first = await frame.screenshot()

        async def changed() -> bool:
            return await frame.screenshot() != first

        await eventually(changed, 30, interval=0.5)
        assert "live" in await page.locator("table").inner_text()
        await page.screenshot(path=shots / "cameras.png")

        # Rules and silences pages.
        await page.goto(c.url + "/rules")
        await page.locator("section.rule svg polyline").wait_for()
        assert "alarm over the last" in await page.locator("section.rule").inner_text()
        await page.screenshot(path=shots / "rules.png")
        await page.goto(c.url + "/silences")
        assert "active" in await page.locator("table.silences").inner_text()
        await page.screenshot(path=shots / "silences.png")

        # Readable at phone width: nothing wider than the screen.
        phone, _ = await new_page(browser, 390, 844)
        await phone.goto(c.url + "/")
        await phone.locator("li.event").first.wait_for()
        assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
        await phone.screenshot(path=shots / "timeline-phone.png")
        assert dialogs == []


async def test_a_token_guards_every_route_and_no_secret_leaks(tmp_path: Path) -> None:
    async with running_console(tmp_path, token=TOKEN) as c, chromium() as browser:
        assert (await c.api("/healthz")).status_code == 200
        for path in ("/", "/api/events", "/api/rules", "/status", "/metrics", "/cameras",
                     "/api/cameras/lobby/frame"):
            response = await c.api(path)
            assert response.status_code == 401, path
        assert (await c.api("/api/events", token="wrong-token-123")).status_code == 401
        assert (await c.api("/api/events", token=TOKEN)).status_code == 200

        # Bad input is a clear 400/404, never a 500.
        assert (await c.api("/api/events?since=yesterday", token=TOKEN)).status_code == 400
        assert (await c.api("/api/events?limit=100000", token=TOKEN)).status_code == 400
        assert (await c.api("/api/events/abc", token=TOKEN)).status_code == 404
        async with httpx.AsyncClient(timeout=10) as client:
            bad = await client.post(c.url + "/api/silences", json={"matchers": [{"name": 1}]},
                                    headers={"Authorization": f"Bearer {TOKEN}"})
            assert bad.status_code == 400 and "matcher" in bad.json()["error"]

        # A browser logs in with the form and gets an HttpOnly SameSite cookie.
        context = await browser.new_context()
        page = await context.new_page()
        first = await page.goto(c.url + "/rules")
        assert first.status == 401
        await page.get_by_label("Token").fill(TOKEN)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(c.url + "/rules")
        [cookie] = await context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"]

        # CSRF: the cookie alone cannot change state.
        refused = await page.request.post(c.url + "/silences",
                                           form={"rule": RULE, "duration": "1h", "by": "x"})
        assert refused.status == 403
        cross = await page.request.post(c.url + "/api/silences", headers={
            "Origin": "http://evil.example", "Content-Type": "application/json"},
            data=json.dumps({"matchers": [{"name": "rule", "value": RULE}], "duration": "1h",
                             "created_by": "x"}))
        assert cross.status == 403
        assert await c.daemon.store.silences() == []

        # A silence added with the CLI reaches the running daemon within seconds.
        labels = AlertLabels(RULE, "lobby", "critical", {"site": "north"})
        code = await asyncio.to_thread(main, ["silence", "add", "-c", str(c.config_path),
                                              "--label", "site=north", "--for", "10m",
                                              "--comment", "maintenance"])
        assert code == 0
        assert c.daemon.silences is not None
        await eventually(lambda: c.daemon.silences.match(labels) is not None, 10)

        # No secret on any page or API answer.
        hook_url = c.hook.url("/hook")
        for path in ("/", "/rules", "/cameras", "/silences", "/api/rules", "/api/cameras",
                     "/api/silences", "/api/events", "/status"):
            body = (await c.api(path, token=TOKEN)).text
            assert TOKEN not in body and hook_url not in body, path
        await context.close()
