"""The console's API and pages on a real store through the ASGI app; clips; config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from watcher.clock import ManualClock
from watcher.config import parse_config
from watcher.console.api import ConsoleSource, stream_owners
from watcher.console.clips import ClipRecorder, clip_span, encode_clip, to_jpeg
from watcher.console.commands import feedback_label
from watcher.console.config import ClipsConfig
from watcher.engine.state import AlertState, Kind, Status, Transition
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.errors import ConfigError
from watcher.media.testsrc import SyntheticScene
from watcher.media.tracks import LatestFrame
from watcher.observe.server import create_status_app
from watcher.observe.source import StatusSource
from watcher.store.reviews import Clip, Feedback

T0 = 1_800_000_000_000


def firing(n: int, stream: str = "lobby", **extra: object) -> AlertEventRecord:
    t = Transition(Kind.FIRING, True, T0 + n * 1000, n)
    return AlertEventRecord.from_transition(
        "motion", stream, t, severity="warning", answer={"motion": True},
        snapshot=b"\xff\xd8jpeg", stream_time_ms=60_000,
        extra={"first_match_ms": T0 + n * 1000 - 2000, "window_ms": 3000, **extra})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AlertStore]:
    async with AlertStore(tmp_path / "s.sqlite3") as store:
        yield store


def client(src: ConsoleSource) -> httpx.AsyncClient:
    app = create_status_app(src.status, console=src)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def test_pages_of_events_and_bad_input(store: AlertStore) -> None:
    for n in range(1, 8):
        state = AlertState(Status.FIRING, firing_since_ms=T0, episode=n)
        await store.record("motion", "lobby" if n % 2 else "dock", state, [
            firing(n, "lobby" if n % 2 else "dock")])
    src = ConsoleSource(status=StatusSource(keepers={}, store=store), store=store,
                        clock=ManualClock(T0 + 100_000))
    async with client(src) as http:
        page = (await http.get("/api/events?limit=3")).json()
        assert [e["episode"] for e in page["events"]] == [7, 6, 5]
        more = (await http.get(f"/api/events?limit=3&before={page['next_before']}")).json()
        assert [e["episode"] for e in more["events"]] == [4, 3, 2]
        lobby = (await http.get("/api/events?stream=lobby")).json()["events"]
        assert {e["stream"] for e in lobby} == {"lobby"} and len(lobby) == 4
        since = (await http.get("/api/events?since=1800000005000")).json()["events"]
        assert [e["episode"] for e in since] == [7, 6, 5]
        iso = (await http.get("/api/events?until=2027-01-15T08:00:03Z")).json()["events"]
        assert [e["episode"] for e in iso] == [2, 1]
        for bad in ("limit=0", "limit=x", "status=maybe", "feedback=meh", "before=12",
                    "since=tomorrow", "silenced=perhaps"):
            response = await http.get(f"/api/events?{bad}")
            assert response.status_code == 400 and response.json()["error"], bad
        assert (await http.get("/api/events/999")).status_code == 404
        assert (await http.get("/api/events/1/clip")).status_code == 404
        html = await http.get("/?status=maybe", headers={"Accept": "text/html"})
        assert html.status_code == 400 and "status must be one of" in html.text
        bad_body = await http.post("/api/events/1/feedback", content=b"[1]",
                                   headers={"Content-Type": "application/json"})
        assert bad_body.status_code == 400
        label = await http.post("/api/events/1/feedback", json={"label": "maybe"})
        assert label.status_code == 400 and "real" in label.json()["error"]
        ok = await http.post("/api/events/1/feedback", json={"label": "real", "note": "yes"})
        assert ok.status_code == 200 and ok.json()["label"] == "real"
        ack = await http.post("/api/events/1/ack", json={"by": "ana"})
        assert ack.json()["acknowledged"] and ack.json()["episode"] == 1
        form = await http.post("/events/1/ack", data={"by": "x"})  # no CSRF token
        assert form.status_code == 403
        silence = await http.post("/api/silences", json={
            "matchers": [{"name": "stream", "value": "dock"}], "duration": "1h",
            "created_by": "ana", "comment": "works"})
        assert silence.status_code == 201
        sid = silence.json()["id"]
        assert (await http.delete(f"/api/silences/{sid}")).json() == {"expired": True}
        assert (await http.delete(f"/api/silences/{sid}")).status_code == 404
        other_host = await http.get("/api/events", headers={"Host": "evil.example"})
        assert other_host.status_code == 403


async def test_a_pulled_camera_keeps_a_snapshot_and_the_page_says_so(store: AlertStore,
                                                                       ) -> None:
    [event_id] = await store.record("motion", "yard", AlertState(
        Status.FIRING, firing_since_ms=T0, episode=1), [firing(1, "yard")])
    src = ConsoleSource(status=StatusSource(keepers={}, store=store), store=store,
                        pulled=lambda name: name == "yard")
    async with client(src) as http:
        doc = (await http.get(f"/api/events/{event_id}")).json()
        assert doc["clip_status"] == "pulled" and doc["has_snapshot"]
        page = await http.get(f"/events/{event_id}", headers={"Accept": "text/html"})
        assert "Snapshot only: the API server pulls this camera" in page.text
        snap = await http.get(doc["snapshot_url"])
        assert snap.headers["content-type"] == "image/jpeg" and snap.content == b"\xff\xd8jpeg"


async def test_clips_are_cut_from_recorded_frames_and_trimmed_to_the_budget(
        store: AlertStore) -> None:
    config = ClipsConfig(before=1, after=1, fps=10, max_total_mb=0.05)
    event = firing(1)
    start, end = clip_span(event, config)
    assert (start, end) == (T0 + 1000 - 2000 - 3000 - 1000, T0 + 1000 + 1000)
    long = clip_span(event, ClipsConfig(before=100, max_length=10))
    assert long[1] - long[0] == 10_000

    clock = ManualClock(T0 - 6000)
    frames = LatestFrame()
    keeper = SimpleNamespace(frames=frames)
    recorder = ClipRecorder(config, store, {"lobby": keeper}, clock, lambda name: False)
    scene = SyntheticScene(width=160, height=120, events=("box",), start=0, period=4,
                           duration=3)
    for n in range(80):  # 8 s at 10 fps, timed by the manual clock
        frames.put(scene.frame(n))
        await recorder._sample("lobby", keeper)
        clock.advance(0.1)
    history = recorder.histories["lobby"]
    assert len(history.frames) == 80 and history.bytes > 0
    [event_id] = await store.record("motion", "lobby", AlertState(
        Status.FIRING, firing_since_ms=T0, episode=1), [event])
    recorder.on_stored([_with_id(event, event_id)])
    await recorder.wait_idle()
    clip = await store.clip(event_id)
    assert clip is not None and clip.content_type == "video/mp4" and clip.data
    assert clip.frames == 70 and clip.start_ms == start  # [start, end] at 10 fps
    assert recorder.made == 1

    big = encode_clip([(i * 100, to_jpeg(scene.frame(i), 160) or b"") for i in range(40)],
                      "webm")
    later = [firing(n) for n in (2, 3)]
    for n, e in zip((2, 3), later, strict=True):
        [i] = await store.record("motion", "lobby", AlertState(
            Status.FIRING, firing_since_ms=T0, episode=n), [e])
        await store.save_clip(Clip(i, big.content_type, len(big.data), big.frames, 0, 1, 1,
                                   T0 + 10_000 + n, big.data))
    dropped = await store.trim_clips(round(0.05 * 1024 * 1024))
    assert dropped >= 1 and await store.clip(event_id, data=False) is None
    assert await store.event(event_id) is not None  # the alert record stays


def _with_id(event: AlertEventRecord, event_id: int) -> AlertEventRecord:
    return replace(event, id=event_id)


def test_feedback_labels_on_the_stream_clock_and_in_utc() -> None:
    event = _with_id(firing(5), 9)
    label = feedback_label(event, Feedback(9, "real", "yes", "ana", 0), T0 + 12_000)
    # window starts 3 s before the first match (2 s before the firing at T0+5s)
    assert label["start"] == 55.0 and label["end"] == 67.0
    assert label["label"] == "event" and label["stream"] == "lobby" and label["by"] == "ana"
    assert label["start_at"] == "2027-01-15T08:00:00.000Z"
    assert label["end_at"] == "2027-01-15T08:00:12.000Z"
    open_one = feedback_label(event, Feedback(9, "false_alarm", "", "x", 0), None)
    assert open_one["end"] == 60.0 and open_one["label"] == "false_alarm"


def test_console_settings_are_checked_with_file_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("status:\n  token: short\n  public_url: ftp://x\nclips:\n  format: gif\n",
                     name="w.yaml")
    problems = "\n".join(caught.value.problems)
    assert "w.yaml:2" in problems and "8 characters" in problems
    assert "w.yaml:3" in problems and "http" in problems
    assert "w.yaml:5" in problems and "mp4" in problems
    ok = parse_config("status: {token: a-long-secret, public_url: 'https://w.example/'}\n")
    assert ok.status.public_url == "https://w.example" and ok.clips.format == "mp4"
    for name, info in ClipsConfig.model_fields.items():
        assert info.description, name


async def test_clips_count_in_the_evidence_budget_and_go_oldest_first(
        store: AlertStore) -> None:
    ids = []
    for n in (1, 2, 3):
        [event_id] = await store.record("motion", "lobby", AlertState(
            Status.FIRING, firing_since_ms=T0, episode=n), [firing(n)])
        ids.append(event_id)
        await store.save_clip(Clip(event_id, "video/mp4", 1000, 10, 0, 1, 1, T0 + n * 1000 + 1,
                                   b"c" * 1000))
    snapshot = len(b"\xff\xd8jpeg")
    assert await store.evidence_bytes() == 3 * (1000 + snapshot)
    dropped, left = await store.trim_evidence(2 * (1000 + snapshot))
    assert dropped == 1 and left == 2 * (1000 + snapshot)
    first = await store.event(ids[0])
    assert first is not None and first.snapshot is None  # the record stays
    assert await store.clip(ids[0], data=False) is None
    assert await store.clip(ids[1], data=False) is not None


def test_in_a_cluster_each_camera_names_its_owner() -> None:
    snapshot = {"groups": [{"group": "g1", "streams": ["dock", "yard"], "owner": "node-b"},
                           {"group": "g2", "streams": ["lobby"], "owner": None}]}
    assert stream_owners(snapshot) == {"dock": "node-b", "yard": "node-b"}
    assert stream_owners(None) == {}
