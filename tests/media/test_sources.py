"""Video sources: files (looping or not), HTTP, HLS, testsrc; scaling, decimation, reconnects.

Media files are written with av into a temporary folder and served by a real
HTTP server on 127.0.0.1 that a test can stop and start again on one port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import logging
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import pytest
from support.camera import MjpegCamera
from support.poll import eventually
from support.receivers import free_port

from watcher.backoff import Backoff
from watcher.media.changes import ChangeTracker, thumbnail
from watcher.media.sources import (
    RecentFrames,
    VideoSource,
    _set_decoder_threads,
    open_source,
    redact,
    source_kind,
)
from watcher.media.testsrc import SyntheticScene
from watcher.media.tracks import LatestFrame, to_bgr

WIDTH, HEIGHT, FPS = 320, 240, 10
POLL = 0.02
FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)


# -- media and an HTTP server ------------------------------------------------------------------
def write_clip(path: Path, *, seconds: float, fmt: str | None = None,
               options: dict[str, str] | None = None) -> Path:
    """``seconds`` of a synthetic scene at FPS, H.264 in the container ``path`` names."""
    scene = SyntheticScene(width=WIDTH, height=HEIGHT, fps=FPS, noise=0)
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"g": str(FPS), "preset": "ultrafast"}
        for n in range(round(seconds * FPS)):
            frame = av.VideoFrame.from_ndarray(scene.frame(n), format="bgr24")
            frame.pts, frame.time_base = n, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_clip(root / "clip.mp4", seconds=1)
    write_clip(root / "clip.ts", seconds=1)
    write_clip(root / "live.m3u8", seconds=2, fmt="hls",
               options={"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"})
    return root


@dataclass
class FileServer:
    """Serves ``root`` on a fixed 127.0.0.1 port; ``stop()`` and ``start()`` again at will."""

    root: Path
    port: int = field(default_factory=free_port)
    auth: str | None = None
    """``user:password`` the server demands with a Basic challenge."""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None

    def start(self) -> None:
        server = self
        expected = f"Basic {base64.b64encode(self.auth.encode()).decode()}" if self.auth else None

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("authorization")))
                if expected and self.headers.get("authorization") != expected:
                    self.send_response(401)
                    self.send_header("www-authenticate", 'Basic realm="camera"')
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        handler = functools.partial(Handler, directory=str(self.root))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def url(self, name: str, credentials: str | None = None) -> str:
        user = f"{credentials}@" if credentials else ""
        return f"http://{user}127.0.0.1:{self.port}/{name}"


@pytest.fixture
def file_server(media_dir: Path) -> Any:
    server = FileServer(media_dir)
    yield server
    server.stop()


@pytest.fixture
async def sources() -> AsyncIterator[Callable[..., tuple[VideoSource, LatestFrame]]]:
    """Open and start sources; every one is stopped at the end of the test."""
    started: list[VideoSource] = []

    def make(spec: str, **kwargs: Any) -> tuple[VideoSource, LatestFrame]:
        sink = LatestFrame()
        kwargs.setdefault("fps", FPS)
        source = open_source(spec, sink=sink, **kwargs)
        source.start()
        started.append(source)
        return source, sink

    yield make
    for source in started:
        await source.stop()


until = functools.partial(eventually, interval=POLL)


# -- files -----------------------------------------------------------------------------------
async def test_looping_file_keeps_delivering_past_its_end(media_dir: Path, sources: Any) -> None:
    source, sink = sources(str(media_dir / "clip.mp4"), loop=True)
    await until(lambda: source.stats.loops >= 2 and source.stats.frames > 2 * FPS, timeout=8)
    stats = source.stats
    assert stats.state == "live"
    assert stats.reconnects == 0 and stats.last_error is None
    assert to_bgr(sink.get()).shape == (HEIGHT, WIDTH, 3)


def _ffmpeg_threads() -> int:
    """Threads FFmpeg started in this process (it names them ``av:CODEC:...``)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            names.append((task / "comm").read_text())
    return sum(name.startswith("av:") for name in names)


async def test_a_camera_sized_file_decodes_on_its_source_thread_alone(
        media_dir: Path, sources: Any) -> None:
    """FFmpeg's automatic count is a thread per core (of this process's affinity) plus one."""
    before = _ffmpeg_threads()
    source, _ = sources(str(media_dir / "clip.mp4"), loop=True)
    await until(lambda: source.stats.frames_decoded > FPS, timeout=8)
    assert source.stats.path == "transcode"
    assert _ffmpeg_threads() == before


@pytest.mark.parametrize(("fps", "one_thread"), [(30, True), (1000, False)])
def test_decoder_threads_follow_the_pixel_rate(media_dir: Path, fps: float,
                                               one_thread: bool) -> None:
    with av.open(str(media_dir / "clip.mp4")) as container:
        stream = container.streams.video[0]
        _set_decoder_threads(stream, fps, paced=True)
        assert (stream.codec_context.thread_count == 1) is one_thread
        assert stream.thread_type.name == ("SLICE" if one_thread else "AUTO")
        assert next(container.decode(stream)).width == WIDTH


async def test_decoded_frames_stay_yuv_and_track_changes_from_their_luma(
        media_dir: Path, sources: Any) -> None:
    seen: list[Any] = []
    tracker = ChangeTracker()

    def on_frame(frame: Any, at: float) -> None:
        seen.append(frame)
        tracker(frame, at)

    source, sink = sources(str(media_dir / "clip.mp4"), on_frame=on_frame)
    await until(lambda: source.stats.state == "ended", timeout=8)
    assert len(seen) == FPS and tracker.frames == FPS
    for frame in seen:  # what the encoder takes, as decoded: no BGR in between
        assert isinstance(frame, av.VideoFrame)
        assert (frame.format.name, frame.width, frame.height) == ("yuv420p", WIDTH, HEIGHT)
        # The luma thumbnail is the BGR grey thumbnail (BT.601 weights, video range).
        from_luma, from_bgr = thumbnail(frame), thumbnail(to_bgr(frame))
        assert from_luma.shape == from_bgr.shape == (24, 32)
        assert abs(from_luma.astype(int) - from_bgr).max() <= 4
    assert sink.get() is seen[-1]


async def test_file_without_loop_ends_cleanly_in_real_time(media_dir: Path,
                                                           sources: Any) -> None:
    started = time.monotonic()
    source, _ = sources(str(media_dir / "clip.mp4"))
    await until(lambda: source.stats.state == "ended", timeout=8)
    elapsed = time.monotonic() - started
    stats = source.stats
    assert stats.frames == FPS  # every frame of the 1 s clip, once
    assert stats.reconnects == 0 and stats.loops == 0 and stats.last_error is None
    assert 0.7 < elapsed < 5  # paced by timestamps, not decoded at 100x speed
    await until(lambda: not source.running, timeout=2)
    await source.stop()
    assert source.stats.state == "ended"


@pytest.mark.parametrize(("size", "shape"), [
    ((160, 96), (96, 160, 3)),     # both given: exactly that size
    ((160, None), (120, 160, 3)),  # one given: the aspect ratio is kept
    ((None, None), (HEIGHT, WIDTH, 3)),
])
@pytest.mark.parametrize("spec", ["clip.ts", "testsrc:size=320x240"])
async def test_frames_arrive_scaled(media_dir: Path, sources: Any, spec: str,
                                    size: tuple[int | None, int | None],
                                    shape: tuple[int, int, int]) -> None:
    path = spec if spec.startswith("testsrc") else str(media_dir / spec)
    source, sink = sources(path, width=size[0], height=size[1])
    await until(lambda: sink.get() is not None, timeout=5)
    assert to_bgr(sink.get()).shape == shape
    assert (source.stats.width, source.stats.height) == (shape[1], shape[0])


async def test_decimates_to_a_lower_fps(media_dir: Path, sources: Any) -> None:
    recent = RecentFrames(size=3)
    source, _ = sources(str(media_dir / "clip.ts"), fps=FPS / 2, on_frame=recent)
    await until(lambda: source.stats.state == "ended", timeout=8)
    assert source.stats.frames_decoded == FPS
    assert source.stats.frames == FPS // 2
    kept = recent.snapshot()
    assert len(kept) == 3
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(kept)]
    assert 0.1 < statistics.mean(gaps) < 0.35  # about 1 / (FPS / 2), in real time


async def test_testsrc_renders_at_the_configured_fps(sources: Any) -> None:
    source, sink = sources("testsrc:events=box,start=0", fps=20, width=64, height=48)
    await asyncio.sleep(1.0)
    frames = source.stats.frames
    assert 12 <= frames <= 24
    assert to_bgr(sink.get()).shape == (48, 64, 3)
    assert source.stats.state == "live" and source.stats.reconnects == 0


async def test_stop_is_prompt_and_final(sources: Any, media_dir: Path) -> None:
    source, sink = sources("testsrc", fps=5)
    await until(lambda: sink.seq > 0, timeout=5)
    started = time.monotonic()
    await source.stop()
    assert time.monotonic() - started < 0.5
    assert source.stats.state == "stopped" and not source.running
    seq = sink.seq
    await asyncio.sleep(0.3)
    assert sink.seq == seq

    # A paced file waiting for its next frame's time stops as promptly.
    slow, slow_sink = sources(str(media_dir / "clip.mp4"), fps=1, loop=True)
    await until(lambda: slow_sink.seq > 0, timeout=5)
    started = time.monotonic()
    await slow.stop()
    assert time.monotonic() - started < 0.5 and not slow.running


# -- network -----------------------------------------------------------------------------------
async def test_http_source_is_picked_up_after_reconnect_backoff(file_server: FileServer,
                                                                sources: Any) -> None:
    source, sink = sources(file_server.url("clip.ts"), backoff=FAST)
    await until(lambda: source.stats.reconnects >= 2, timeout=5)
    assert source.stats.state == "reconnecting"
    assert "refused" in (source.stats.last_error or "").lower()
    assert sink.get() is None

    file_server.start()
    await until(lambda: source.stats.frames >= 3, timeout=5)
    assert source.stats.state == "live"

    # The camera goes away (the clip also just ends): reconnects, then resumes on the same port.
    file_server.stop()
    reconnects = source.stats.reconnects
    await until(lambda: source.stats.reconnects >= reconnects + 2, timeout=8)
    frames = source.stats.frames
    file_server.start()
    await until(lambda: source.stats.frames > frames, timeout=5)


async def test_mjpeg_camera_is_timed_by_arrival_and_resumes_after_a_power_cut(
        sources: Any) -> None:
    # MJPEG over HTTP has no timestamps (the demuxer invents 25 fps ones): every frame of a
    # 5 fps camera must get through, not one in five.
    camera = MjpegCamera(SyntheticScene(width=160, height=120, fps=5, noise=0))
    camera.start()
    try:
        source, sink = sources(camera.url, fps=5, backoff=FAST)
        await until(lambda: source.stats.frames >= 3, timeout=5)
        first, started = source.stats.frames, time.monotonic()
        await asyncio.sleep(1.0)
        rate = (source.stats.frames - first) / (time.monotonic() - started)
        assert 3.5 <= rate <= 6.5
        assert to_bgr(sink.get()).shape == (120, 160, 3)
        assert source.stats.resumed_at is None

        camera.stop()
        await until(lambda: source.stats.state == "reconnecting", timeout=5)
        camera.start()
        await until(lambda: source.stats.state == "live", timeout=5)
        assert source.stats.resumed_at is not None
        assert source.stats.resumed_at <= time.monotonic()
        assert camera.connections >= 2
    finally:
        camera.stop()


async def test_hls_source_plays_with_credentials(file_server: FileServer, sources: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    file_server.auth = "user:secret"
    file_server.start()
    source, sink = sources(file_server.url("live.m3u8", "user:secret"), fps=5, width=160,
                           backoff=FAST)
    assert source.kind == "hls"
    await until(lambda: source.stats.frames >= 6, timeout=8)  # across both 1 s segments
    assert to_bgr(sink.get()).shape == (120, 160, 3)
    assert source.stats.last_error is None
    paths = {path for path, auth in file_server.requests if auth}
    assert {"/live.m3u8", "/live0.ts", "/live1.ts"} <= paths  # the credentials were used
    assert "secret" not in caplog.text and "secret" not in source.name


async def test_unreachable_rtsp_camera_reports_errors_without_credentials(
        sources: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"rtsp://admin:secret@127.0.0.1:{free_port()}/stream1?token=abc123"
    source, _ = sources(url, backoff=FAST)
    await until(lambda: source.stats.reconnects >= 2, timeout=5)
    stats = source.stats
    assert stats.state == "reconnecting" and stats.frames == 0
    assert stats.last_error and "secret" not in stats.last_error
    text = caplog.text + repr(stats) + source.name
    assert "secret" not in text and "abc123" not in text and url not in text


async def test_reconnect_delays_grow_exponentially_to_the_cap(sources: Any) -> None:
    delays: list[float] = []

    @dataclass(slots=True)
    class Recording(Backoff):
        def next(self) -> float:
            delay = Backoff.next(self)
            delays.append(delay)
            return delay

    sources(f"http://127.0.0.1:{free_port()}/x.ts",
            backoff=Recording(initial=0.01, maximum=0.04, jitter=0))
    await until(lambda: len(delays) >= 5, timeout=5)
    assert delays[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]


# -- grammar -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "kind"), [
    ("testsrc", "testsrc"),
    ("testsrc:events=box,fps=10", "testsrc"),
    ("device:0", "device"),
    ("/dev/video2", "device"),
    ("rtsp://cam.local:554/stream", "rtsp"),
    ("rtsps://u:p@cam/stream", "rtsp"),
    ("http://cam/live.m3u8", "hls"),
    ("https://cdn.example/path/index.M3U8?token=x", "hls"),
    ("http://cam/video.mjpg", "http"),
    ("https://cam/stream.ts", "http"),
    ("/videos/door.mp4", "file"),
    ("clips/door.mkv", "file"),
    ("file:///videos/door.mp4", "file"),
])
def test_source_kinds(spec: str, kind: str) -> None:
    assert source_kind(spec) == kind


@pytest.mark.parametrize("spec", ["ftp://user:secret@host/x.mp4", "", "testsrc:bogus=1"])
def test_bad_specs_are_rejected_without_credentials(spec: str) -> None:
    with pytest.raises(ValueError) as raised:
        open_source(spec, fps=5, sink=LatestFrame())
    assert "secret" not in str(raised.value)


def test_redact_masks_userinfo_and_secret_query_values() -> None:
    assert redact("rtsp://admin:pa55@cam:554/s") == "rtsp://***@cam:554/s"
    assert redact("error: 'http://u:p@h/x.ts' failed") == "error: 'http://***@h/x.ts' failed"
    assert redact("https://h/live.m3u8?token=abc&q=1") == "https://h/live.m3u8?token=***&q=1"
    assert redact("rtsp://h/cam?user=admin&password=x") == "rtsp://h/cam?user=***&password=***"
    assert redact("/videos/a@b.mp4") == "/videos/a@b.mp4"
