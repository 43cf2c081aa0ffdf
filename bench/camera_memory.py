"""Where the memory of a transcoded camera goes (P7): RSS per camera, part by part.

One process with the daemon's malloc arena cap (``--no-cap``: without), in stages, each
going from ``--cameras A,B`` cameras so that fixed costs cancel:

* ``sources``: ``testsrc`` sources only, each rendering in its thread into a
  ``LatestFrame`` (640x480 at 2 fps);
* ``pairs``: a WHIP publisher per source (``FrameTrack``, aiortc's VP8 encoder, RTP)
  into the embedded server under uvicorn on 127.0.0.1 (jitter buffer, VP8 decoder
  thread, JPEG, ``retention_seconds`` 60), minus the frame bytes it retained;
* ``VP8 encoder`` / ``VP8 decoder``: aiortc's codec objects alone, ``A``..``B`` of them
  after 40 frames each of the same scene, no network, each kind in a fresh process.

``--trace`` adds the Python heap per package (``tracemalloc``) to the pairs stage.

    .venv/bin/python bench/camera_memory.py [--cameras 2,6] [--settle 30] [--trace]
    .venv/bin/python bench/camera_memory.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import socket
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction

import _common
import _verdict

SPEC = "testsrc:events=person,period=20,duration=6,size=640x480"
FPS = 2.0
KEY = "bench-key"
_PACKAGES = ("aiortc", "aioice", "av", "numpy", "watcher/server", "watcher/media")


@dataclass
class Sample:
    cameras: int
    rss_mb: float
    threads: int
    retained_mb: float = 0.0
    python_mb: Counter[str] = field(default_factory=Counter)


def threads_now() -> int:
    return len(os.listdir("/proc/self/task"))


def python_heap() -> Counter[str]:
    """Python-allocated MB by the package that allocated it (first frame of the trace)."""
    out: Counter[str] = Counter()
    if not tracemalloc.is_tracing():
        return out
    for stat in tracemalloc.take_snapshot().statistics("filename"):
        name = stat.traceback[0].filename
        out[next((p for p in _PACKAGES if f"/{p}/" in name), "other")] += stat.size / 2**20
    return out


def per_camera(a: Sample, b: Sample) -> dict[str, float]:
    n = b.cameras - a.cameras
    row = {"rss_mb": (b.rss_mb - a.rss_mb) / n, "threads": (b.threads - a.threads) / n,
           "retained_mb": (b.retained_mb - a.retained_mb) / n}
    row["beyond_retained_mb"] = row["rss_mb"] - row["retained_mb"]
    for key in set(a.python_mb) | set(b.python_mb):
        row[f"python {key}"] = (b.python_mb[key] - a.python_mb[key]) / n
    return row


def codec_row(part: str, counts: tuple[int, int]) -> dict[str, float]:
    """RSS per aiortc VP8 ``encoder`` or ``decoder``, each fed 40 frames of the scene."""
    import av
    from aiortc.codecs import get_decoder, get_encoder
    from aiortc.codecs.vpx import vp8_depayload
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from watcher.media.testsrc import SyntheticScene

    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    scene = SyntheticScene.from_spec(SPEC, fps=FPS)
    frames = []
    for n in range(40):
        frame = av.VideoFrame.from_ndarray(scene(n), format="bgr24").reformat(format="yuv420p")
        frame.pts, frame.time_base = n * 45_000, Fraction(1, 90_000)
        frames.append(frame)
    reference = get_encoder(codec)  # kept alive: its freed heap would serve the decoders
    stream = [b"".join(vp8_depayload(p) for p in reference.encode(f)[0]) for f in frames]

    def encoder() -> object:
        coder = get_encoder(codec)
        for frame in frames:
            coder.encode(frame)
        return coder

    def decoder() -> object:
        coder = get_decoder(codec)
        for n, data in enumerate(stream):
            coder.decode(JitterFrame(data=data, timestamp=n * 45_000))
        return coder

    make = encoder if part == "encoder" else decoder
    held = [make() for _ in range(counts[0])]
    a = Sample(len(held), _common.current_rss_mb(), threads_now())
    held += [make() for _ in range(counts[1] - counts[0])]
    return per_camera(a, Sample(len(held), _common.current_rss_mb(), threads_now()))


def codec_row_in_child(part: str, counts: tuple[int, int], no_cap: bool) -> dict[str, float]:
    """:func:`codec_row` in a fresh process, so no other part's freed heap serves it."""
    command = [sys.executable, __file__, "--part", part, "--cameras", f"{counts[0]},{counts[1]}"]
    done = subprocess.run(command + (["--no-cap"] if no_cap else []), capture_output=True,
                          text=True, check=True, timeout=300)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def pipeline_rows(counts: tuple[int, int], settle: float,
                        trace: bool) -> tuple[dict[str, dict[str, float]], float]:
    """Per-camera rows of the sources and pairs stages, and what ``malloc_trim`` gave back."""
    import httpx
    import uvicorn

    from watcher.media.sources import open_source
    from watcher.media.tracks import FrameTrack, LatestFrame
    from watcher.media.whip import WhipPublisher
    from watcher.server.app import create_app
    from watcher.server.settings import ServerSettings

    app = create_app(ServerSettings(api_keys=[KEY], retention_seconds=60))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/v1beta"
    http = httpx.AsyncClient(base_url=base, timeout=30,
                             headers={"authorization": f"Bearer {KEY}"})
    sinks: list[LatestFrame] = []
    sources, publishers, streams = [], [], []

    async def sample() -> Sample:
        await asyncio.sleep(settle)
        retained = 0
        for stream_id in streams:
            status = (await http.get(f"/streams/{stream_id}")).json()
            retained += status.get("retained_bytes") or 0
            await http.post(f"/streams/{stream_id}/keepalive")
        return Sample(len(sinks) if not streams else len(streams), _common.current_rss_mb(),
                      threads_now(), retained / 2**20, python_heap())

    async def add_sources(upto: int) -> None:
        while len(sinks) < upto:
            sink = LatestFrame()
            source = open_source(SPEC, fps=FPS, width=640, height=480, sink=sink)
            source.start()
            sinks.append(sink)
            sources.append(source)

    async def add_pairs(upto: int) -> None:
        while len(publishers) < upto:
            created = (await http.post("/streams")).json()
            streams.append(created["id"])
            publisher = WhipPublisher(created["publish"]["url"], created["publish"]["token"],
                                      FrameTrack(sinks[len(publishers)], FPS))
            await publisher.start()
            await publisher.wait_connected()
            publishers.append(publisher)

    async def stage(add: Callable[[int], Awaitable[None]]) -> dict[str, float]:
        await add(counts[0])
        a = await sample()
        await add(counts[1])
        return per_camera(a, await sample())

    try:
        await add_sources(counts[1])  # every pair has its source already
        if trace:
            tracemalloc.start(1)
        rows = {"pairs": await stage(add_pairs)}
        before = _common.current_rss_mb()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = before - _common.current_rss_mb()
    finally:
        tracemalloc.stop()
        for publisher in publishers:
            await publisher.stop()
        for source in sources:
            await source.stop()
        await http.aclose()
        server.should_exit = True
        await serving
        sock.close()
    return rows, trimmed


async def sources_row(counts: tuple[int, int], settle: float) -> dict[str, float]:
    from watcher.media.sources import open_source
    from watcher.media.tracks import LatestFrame

    sources = []

    async def sample() -> Sample:
        await asyncio.sleep(settle)
        return Sample(len(sources), _common.current_rss_mb(), threads_now())

    for _ in range(counts[0]):
        sources.append(open_source(SPEC, fps=FPS, width=640, height=480, sink=LatestFrame()))
        sources[-1].start()
    a = await sample()
    for _ in range(counts[1] - counts[0]):
        sources.append(open_source(SPEC, fps=FPS, width=640, height=480, sink=LatestFrame()))
        sources[-1].start()
    row = per_camera(a, await sample())
    for source in sources:
        await source.stop()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", default="2,6", help="A,B: per camera from A to B")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds between adding cameras and reading RSS")
    parser.add_argument("--trace", action="store_true", help="Python heap per package")
    parser.add_argument("--no-cap", action="store_true",
                        help="leave glibc's malloc arenas uncapped")
    parser.add_argument("--part", choices=["encoder", "decoder"], help=argparse.SUPPRESS)
    _verdict.add_smoke(parser)
    args = parser.parse_args()
    _verdict.apply_smoke(args, cameras="1,2", settle=2.0)
    capped = False
    if not args.no_cap:
        from watcher.memory import cap_malloc_arenas

        capped = cap_malloc_arenas()  # as `watcher run` does, before any thread exists
    _common.quiet_logs()
    a, b = (int(n) for n in args.cameras.split(","))
    if args.part:
        print(json.dumps(codec_row(args.part, (a, b))))
        return 0
    check = _verdict.Verdict("camera_memory")
    check.require(0 < a < b, "--cameras needs A < B")
    if check.failed:
        return check.finish(None, "")
    rows = {"sources": asyncio.run(sources_row((a, b), args.settle))}
    pairs, trimmed = asyncio.run(pipeline_rows((a, b), args.settle, args.trace))
    rows |= pairs
    for part in ("encoder", "decoder"):
        rows[f"VP8 {part}"] = codec_row_in_child(part, (a, b), args.no_cap)
    print(f"Machine: {_common.describe_machine(_common.machine_info())}; malloc arenas "
          f"{'capped' if capped else 'not capped'}")
    columns = sorted({k for row in rows.values() for k in row},
                     key=lambda k: (k.startswith("python"), k))
    _common.print_table(f"Per camera, {a} -> {b} cameras (MB, threads)", ["part", *columns],
                        [[name, *(f"{row.get(k, 0):.2f}" for k in columns)]
                         for name, row in rows.items()])
    print(f"malloc_trim(0) at {b} cameras returned {trimmed:.1f} MB")
    check.require(rows["pairs"]["retained_mb"] > 0, "no frame retained by the server")
    return check.finish(None, f"a publisher and ingest pair costs "
                              f"{rows['pairs']['beyond_retained_mb']:.1f} MB beyond its "
                              f"retained frames, its source {rows['sources']['rss_mb']:.1f} MB")


if __name__ == "__main__":
    _verdict.run_main(main)
