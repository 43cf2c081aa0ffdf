"""A web page on another origin publishes a browser camera to the server over WHIP.

Real headless Chromium with its fake camera loads a page from one loopback port;
the page creates a stream through the API and publishes over WHIP to the
server on another port, which only works when the server answers the CORS
preflights and exposes ``Location``. A page from an origin the server does not
allow cannot.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from support.asgi import serve_asgi
from support.browser import chromium
from support.poll import eventually

from watcher.server.app import EmbeddedServer, create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

KEY = "ovs-browser-key"

PAGE = """<!doctype html>
<html><head><title>WHIP publisher</title></head><body>
<video id="preview" autoplay muted playsinline></video>
<script>
async function gathered(pc) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise(resolve => pc.addEventListener("icegatheringstatechange", () => {
    if (pc.iceGatheringState === "complete") resolve();
  }));
}

async function publish(api, key) {
  const created = await fetch(api + "/streams", {
    method: "POST", headers: {"Authorization": "Bearer " + key}});
  const stream = await created.json();
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}});
  document.getElementById("preview").srcObject = media;
  const pc = new RTCPeerConnection({iceServers: []});
  for (const track of media.getVideoTracks()) pc.addTransceiver(track, {direction: "sendonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const answer = await fetch(stream.publish.url, {
    method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp",
              "Authorization": "Bearer " + stream.publish.token}});
  const location = answer.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: await answer.text()});
  window.publisher = {pc, location: new URL(location, stream.publish.url).href};
  return {id: stream.id, status: answer.status, location,
          source: stream.publish.type, created: created.status};
}

async function connected() {
  const pc = window.publisher.pc;
  if (pc.connectionState === "connected") return pc.connectionState;
  await new Promise(resolve => pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "connected" || pc.connectionState === "failed") resolve();
  }));
  return pc.connectionState;
}

async function unpublish() {
  const response = await fetch(window.publisher.location, {method: "DELETE"});
  window.publisher.pc.close();
  return response.status;
}

async function tryCreate(api, key) {
  try {
    const response = await fetch(api + "/streams", {
      method: "POST", headers: {"Authorization": "Bearer " + key}});
    return "answered " + response.status;
  } catch (error) {
    return "blocked: " + error.name;
  }
}
</script></body></html>
"""


async def page_site() -> AsyncIterator[str]:
    """The publisher page, served on a loopback port of its own (another origin)."""
    async def page(_request: object) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async with serve_asgi(Starlette(routes=[Route("/", page)]), lifespan="off") as origin:
        yield origin


@dataclass
class Served:
    server: EmbeddedServer
    api: str
    page: str
    foreign_page: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with contextlib.AsyncExitStack() as stack:
        page = await stack.enter_async_context(contextlib.asynccontextmanager(page_site)())
        foreign = await stack.enter_async_context(contextlib.asynccontextmanager(page_site)())
        app = create_app(ServerSettings(api_keys=[KEY], cors_origins=[page]),
                         backends=[FramesModel()])
        root = await stack.enter_async_context(serve_asgi(app))
        yield Served(app.state.server, f"{root}/v1beta", page, foreign)


async def test_a_page_on_another_origin_publishes_its_camera_over_whip(served: Served) -> None:
    async with chromium(fake_camera=True) as browser:
        page = await browser.new_page()
        await page.goto(served.page + "/")
        result = await page.evaluate("([api, key]) => publish(api, key)", [served.api, KEY])
        assert result["created"] == 201 and result["source"] == "whip"
        assert result["status"] == 201
        stream_id = result["id"]
        # The page could read Location: the server exposes it to other origins.
        assert result["location"].startswith(f"/v1beta/streams/{stream_id}/whip/")
        assert await page.evaluate("() => connected()") == "connected"

        stream = served.server.registry.get_active(stream_id)
        assert stream is not None
        await eventually(lambda: stream.frames.next_index >= 5, timeout=60)  # camera frames
        assert stream.frames.last is not None and len(stream.frames.last.jpeg) > 500

        assert await page.evaluate("() => unpublish()") == 200  # DELETE on Location: preflighted
        assert served.server.ingest.sessions() == []


async def test_a_page_on_an_origin_not_allowed_is_blocked(served: Served) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(served.foreign_page + "/")
        outcome = await page.evaluate("([api, key]) => tryCreate(api, key)", [served.api, KEY])
    assert outcome == "blocked: TypeError"  # the preflight was refused
    assert served.server.registry.all_active() == []
