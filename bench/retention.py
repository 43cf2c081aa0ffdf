"""Bytes one stream retains for a full retention period, offline in simulated time.

Camera-like 640x480 frames (``SyntheticScene``, a person walking through every
20 s) are encoded with aiortc's own VP8 encoder class at its default target
bitrate (the bitstream a WHIP publisher would send), decoded with aiortc's VP8
decoder (what the ingest receives), then pushed through the server's real
storage path: the stored-rate cap (``StreamRegistry.admit_frame``,
``max_stored_fps``), ``encode_frame`` with a ``JpegEncoder`` configured like
``WhipIngest`` and the budget of ``stream_frame_budget`` under the default
``ServerSettings`` (or ``--max-stored-fps``), into a
``StreamRegistry``/``FrameStore`` driven by a ``ManualClock`` that advances
one frame interval per frame. No sockets, no
sleeping: 600 s of 5 fps video takes ~30 s.

Each frame rate runs in a fresh subprocess so its peak RSS is its own.

    .venv/bin/python bench/retention.py                 # 5 and 15 fps, 600 s
    .venv/bin/python bench/retention.py --fps 5 --json
    .venv/bin/python bench/retention.py --fps 15 --max-stored-fps 0   # store every frame
    .venv/bin/python bench/retention.py --smoke   # 5 fps, 20 simulated seconds
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from typing import Any

import _common
import _verdict

GOAL_BYTES = 40_000_000
SWEEP_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80)
SWEEP_SAMPLES = 60
"""Decoded frames (spread over the run) also encoded at each of SWEEP_QUALITIES, untimed."""
DEFAULT_SPEC = "testsrc:events=person,period=20,duration=6,size=640x480"


def run_variant(fps: float, seconds: float, spec: str, bitrate: int | None,
                max_stored_fps: float | None = None) -> dict[str, Any]:
    """One frame rate, in this process."""
    from aiortc.codecs import CODECS, get_decoder, get_encoder
    from aiortc.codecs.vpx import DEFAULT_BITRATE, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame
    from av import VideoFrame

    from watcher.clock import ManualClock
    from watcher.media.testsrc import SyntheticScene
    from watcher.server.encode import (
        MIN_JPEG_QUALITY,
        JpegEncoder,
        encode_frame,
        stream_frame_budget,
    )
    from watcher.server.settings import ServerSettings
    from watcher.server.streams import StreamRegistry

    # The defaults: 600 s, 40 MB per stream, JPEG q <= 80, max_stored_fps 5.
    settings = ServerSettings() if max_stored_fps is None else ServerSettings(
        max_stored_fps=max_stored_fps)
    stream_settings = settings.stream_settings()
    clock = ManualClock()
    registry = StreamRegistry(clock, stream_settings)
    owner = "bench"
    stream = registry.create(owner)
    store = stream.frames
    jpeg_encoder = JpegEncoder(settings.jpeg_quality,
                               min(MIN_JPEG_QUALITY, settings.jpeg_quality))  # as WhipIngest

    [vp8] = [c for c in CODECS["video"] if c.mimeType == "video/VP8"]
    vp8_encoder, vp8_decoder = get_encoder(vp8), get_decoder(vp8)
    if bitrate is not None:
        vp8_encoder.target_bitrate = bitrate  # clamped by aiortc to 250 kbps .. 1.5 Mbps
    scene = SyntheticScene.from_spec(spec, fps=fps)
    scene.frame(0)  # build the cached background/noise before measuring memory

    start_ms = clock.now_ms()
    total = round(seconds * fps)
    rss_before = _common.current_rss_mb()
    payload_bytes = vp8_frame_bytes = keyframes = skipped = 0
    qualities: list[int] = []
    sizes: list[int] = []
    budgets: list[int] = []
    stage = collections.Counter[str]()
    sweep_every = max(1, total // SWEEP_SAMPLES)
    sweep = collections.defaultdict[int, list[int]](list)
    swept_at = kept_alive_at = 0
    wall0 = time.perf_counter()
    for n in range(total):
        # The clock of frame n, exactly (advance() rounds each step to a millisecond).
        target = start_ms + round(n * 1000 / fps)
        clock.advance((target - clock.now_ms()) / 1000)
        t0 = time.perf_counter()
        bgr = scene.frame(n)
        t1 = time.perf_counter()
        frame = VideoFrame.from_ndarray(bgr, format="bgr24")
        frame.pts = round(n * 90_000 / fps)  # as FrameTrack: 90 kHz RTP clock
        frame.time_base = Fraction(1, 90_000)
        payloads, timestamp = vp8_encoder.encode(frame, force_keyframe=n == 0)
        t2 = time.perf_counter()
        payload_bytes += sum(len(p) for p in payloads)
        data = b"".join(vp8_depayload(p) for p in payloads)
        vp8_frame_bytes += len(data)
        keyframes += bool(data) and not data[0] & 0x01  # VP8 frame tag: bit 0 clear = key
        decoded = vp8_decoder.decode(JitterFrame(data, timestamp))
        t3 = time.perf_counter()
        for picture in decoded:
            if not registry.admit_frame(stream):  # as the ingest: before BGR and JPEG
                skipped += 1
                continue
            budget = stream_frame_budget(stream, stream_settings, clock.now_ms())
            qualities.append(jpeg_encoder.quality)
            jpeg, _, _ = encode_frame(jpeg_encoder, picture, budget)  # the ingest's path
            registry.add_frame(stream, jpeg)
            sizes.append(len(jpeg))
            budgets.append(budget)
        t4 = time.perf_counter()
        if n % sweep_every == sweep_every // 2:
            for picture in decoded:
                _quality_sweep(picture.to_ndarray(format="bgr24"), sweep)
        stage["render"] += t1 - t0
        stage["vp8_encode"] += t2 - t1
        stage["vp8_decode"] += t3 - t2
        stage["bgr_jpeg_store"] += t4 - t3
        now = clock.now_ms()
        if now - swept_at >= 1000:  # the server's sweeper runs every second
            registry.sweep()
            swept_at = now
        if now - kept_alive_at >= 10_000:  # a publisher keeps its lease alive
            registry.keepalive(stream.id, owner)
            kept_alive_at = now
    wall = time.perf_counter() - wall0

    stored_frames = len(sizes)
    cap = stream_settings.max_stored_fps
    stored_fps = min(fps, cap) if cap else fps
    expected = round(seconds * stored_fps)
    # Judge the quality after the first minute (of stored frames).
    settle = min(len(qualities), round(60 * stored_fps))
    tail = qualities[settle:] or qualities
    tail_counts = collections.Counter(tail)
    first, last = store.first, store.last
    return {
        "fps": fps,
        "simulated_seconds": seconds,
        "spec": spec,
        "vp8_target_bitrate": vp8_encoder.target_bitrate,
        "vp8_default_bitrate": DEFAULT_BITRATE,
        "frames_in": total,
        "max_stored_fps": cap,
        "stored_fps": stored_fps,
        "frames_decoded": total,
        "frames_skipped": skipped,
        "frames_decoded_and_stored": stored_frames,
        "bitstream_payload_bytes": payload_bytes,
        "bitstream_vp8_bytes": vp8_frame_bytes,
        "bitstream_kbps": 8 * payload_bytes / seconds / 1000,
        "vp8_keyframes": keyframes,
        "retained_bytes": store.bytes,
        "retained_frames": len(store),
        "expected_frames": expected,
        "evicted_frames": store.evicted_count,
        "retained_span_s": (last.timestamp_ms - first.timestamp_ms) / 1000 if first and last
        else 0.0,
        "byte_cap": stream_settings.max_bytes_per_stream,
        "goal_bytes": GOAL_BYTES,
        "goal_met": store.bytes < GOAL_BYTES and len(store) >= expected,
        "frame_budget_bytes": statistics.median(budgets),
        "jpeg_quality_final": jpeg_encoder.quality,
        "jpeg_quality_mode_after_60s": tail_counts.most_common(1)[0][0],
        "jpeg_quality_range_after_60s": [min(tail), max(tail)],
        "jpeg_quality_share_after_60s": {str(q): round(c / len(tail), 3)
                                         for q, c in sorted(tail_counts.items())},
        "jpeg_mean_bytes": statistics.fmean(sizes),
        "jpeg_mean_bytes_after_60s": statistics.fmean(sizes[settle:] or sizes),
        "jpeg_mean_bytes_retained": store.bytes / max(1, len(store)),
        "jpeg_max_bytes": max(sizes),
        "jpeg_mean_bytes_by_quality": {str(q): statistics.fmean(v) for q, v in sweep.items()},
        "rss_before_mb": rss_before,
        "rss_end_mb": _common.current_rss_mb(),
        "peak_rss_mb": _common.peak_rss_mb(),
        "wall_seconds": wall,
        "ms_per_frame": {k: 1000 * v / total for k, v in stage.items()},
    }


def _quality_sweep(bgr: Any, out: dict[int, list[int]]) -> None:
    import cv2

    for quality in SWEEP_QUALITIES:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality,
                                             cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if ok:
            out[quality].append(len(buf))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fps", default="5,15",
                        help="comma-separated frame rates, one run each (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="simulated seconds per run (default %(default)s)")
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="SyntheticScene spec")
    parser.add_argument("--bitrate", type=int, default=None,
                        help="VP8 target bitrate in bit/s (default: aiortc's default)")
    parser.add_argument("--max-stored-fps", type=float, default=None,
                        help="the server's max_stored_fps (default: ServerSettings' default; "
                        "0: store every frame)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    _verdict.add_smoke(parser)
    args = parser.parse_args()
    if not args.one:
        _verdict.apply_smoke(args, fps="5", seconds=20.0)
    rates = [float(f) for f in args.fps.split(",") if f.strip()]

    if args.one:  # child: one rate, JSON on stdout
        print(json.dumps(run_variant(rates[0], args.seconds, args.spec, args.bitrate,
                                     args.max_stored_fps)))
        return 0

    machine = _common.machine_info()  # load average before we add to it
    results = []
    for fps in rates:
        command = [sys.executable, __file__, "--one", "--fps", str(fps),
                   "--seconds", str(args.seconds), "--spec", args.spec]
        if args.bitrate is not None:
            command += ["--bitrate", str(args.bitrate)]
        if args.max_stored_fps is not None:
            command += ["--max-stored-fps", str(args.max_stored_fps)]
        timeout = 60 + args.seconds * fps * 0.05  # ~10 ms per frame expected; 5x margin
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"the {fps:g} fps run failed with code {done.returncode}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))

    report = {"benchmark": "retention", "machine": machine, "runs": results}
    if args.json:
        _common.emit_json(report)
        return verdict(results, quiet=True)
    print(f"Machine: {_common.describe_machine(report['machine'])}")
    mb = 1e6
    _common.print_table(
        f"Retention of {args.seconds:g} s of 640x480 camera-like video "
        f"(goal: retained < {GOAL_BYTES / mb:g} MB with every stored frame kept)",
        ["fps", "stored fps (cap)", "VP8 bitstream (floor)", "VP8 kbit/s", "retained",
         "frames kept / expected", "span kept", "JPEG q settled (final)", "mean JPEG",
         "budget/frame", "peak RSS", "goal"],
        [[f"{r['fps']:g}",
          f"{r['stored_fps']:g} ({r['max_stored_fps'] or 'none'})",
          f"{r['bitstream_payload_bytes'] / mb:.1f} MB",
          f"{r['bitstream_kbps']:.0f}",
          f"{r['retained_bytes'] / mb:.1f} MB",
          f"{r['retained_frames']} / {r['expected_frames']}",
          f"{r['retained_span_s']:.0f} s",
          f"q{r['jpeg_quality_mode_after_60s']} ({r['jpeg_quality_final']})",
          f"{r['jpeg_mean_bytes_after_60s'] / 1000:.1f} KB",
          f"{r['frame_budget_bytes'] / 1000:.1f} KB",
          f"{r['peak_rss_mb']:.0f} MB",
          "met" if r["goal_met"] else "MISSED"]
         for r in results])
    _common.print_table(
        "Per-frame cost of the simulation (ms, one core)",
        ["fps", "render", "VP8 encode", "VP8 decode", "BGR+JPEG+store", "wall for the run"],
        [[f"{r['fps']:g}", *(r["ms_per_frame"][k] for k in
                             ("render", "vp8_encode", "vp8_decode", "bgr_jpeg_store")),
          f"{r['wall_seconds']:.0f} s"] for r in results])
    _common.print_table(
        "Mean JPEG size of the received (VP8-decoded) frames by quality "
        f"({SWEEP_SAMPLES} frames sampled over the run, same encoder settings)",
        ["fps", *(f"q{q}" for q in SWEEP_QUALITIES), "budget/frame"],
        [[f"{r['fps']:g}", *(f"{r['jpeg_mean_bytes_by_quality'][str(q)] / 1000:.1f} KB"
                            for q in SWEEP_QUALITIES),
          f"{r['frame_budget_bytes'] / 1000:.1f} KB"] for r in results])
    for r in results:
        share = ", ".join(f"q{q}: {100 * s:.0f}%"
                          for q, s in r["jpeg_quality_share_after_60s"].items())
        print(f"\n{r['fps']:g} fps: quality after the first minute: {share}; "
              f"VP8 keyframes {r['vp8_keyframes']}; skipped by max_stored_fps "
              f"{r['frames_skipped']}; evicted {r['evicted_frames']}; "
              f"RSS {r['rss_before_mb']:.0f} -> {r['rss_end_mb']:.0f} MB")
    return verdict(results)


def verdict(results: list[dict[str, Any]], quiet: bool = False) -> int:
    """Met only when frames were really encoded, decoded and stored at every rate."""
    check = _verdict.Verdict("retention")
    check.require_work(len(results), "runs")
    for r in results:
        rate = f"{r['fps']:g} fps"
        check.require_work(r["bitstream_payload_bytes"], f"VP8 bitstream ({rate})")
        check.require(r["frames_decoded"] == r["frames_in"],
                      f"{r['frames_decoded']} of {r['frames_in']} frames decoded ({rate})")
        check.require_work(r["frames_decoded_and_stored"], f"frames stored ({rate})")
    if quiet:
        return _verdict.FAILED_EXIT if check.failed else 0
    return check.finish(all(r["goal_met"] for r in results), "; ".join(
        f"{r['fps']:g} fps: {r['retained_bytes'] / 1e6:.1f} MB, {r['retained_frames']}/"
        f"{r['expected_frames']} frames over {r['retained_span_s']:.0f} s at "
        f"q{r['jpeg_quality_mode_after_60s']}" for r in results))


if __name__ == "__main__":
    _verdict.run_main(main)
