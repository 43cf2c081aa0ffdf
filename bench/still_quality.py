"""Retention quality (P4): bytes against SSIM for the stills (or video) a stream could store.

The frames are what the ingest really gets: ``--seconds`` of the benchmarks' scene
(640x480, a person crossing) at 5 fps, encoded with aiortc's VP8 encoder at its default
target and decoded with its VP8 decoder, as in ``bench/retention.py``. Each decoded
frame is then encoded as a still in every candidate format and quality (JPEG through
OpenCV as ``JpegEncoder`` does, WebP through OpenCV), decoded back, and compared with
the decoded received frame: SSIM on the luma (Wang et al. 2004, 11x11 Gaussian window,
sigma 1.5), bytes, and the time to encode and to decode one still. The frames are also
stored as short-GOP H.264 (``VIDEO_CANDIDATES``) and decoded back: bytes, SSIM, the
encode CPU per frame and what fetching one frame on demand costs (decoding from its
GOP's keyframe).

A format/quality fits the goal when 600 s at 5 fps (3000 stills) stay under the budget
the server aims at (0.9 x 40 MB), its mean SSIM is at least 0.97, and the ingest's CPU
per stored frame grows at most 50 %: the extra encode CPU over JPEG q30 (thread CPU
time, so the machine's load does not count) against ``INGEST_MS_PER_FRAME``.

    .venv/bin/python bench/still_quality.py [--seconds 20]
    .venv/bin/python bench/still_quality.py --smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
from fractions import Fraction
from typing import Any

import _common
import _verdict
import numpy as np

GOAL_SSIM = 0.97
GOAL_INGEST_GROWTH = 0.5
INGEST_MS_PER_FRAME = 3.8
"""The ingest's CPU per stored frame today (BENCHMARKS.md, ingest CPU: 1.9 % of one core
at 5 fps on an idle machine): SRTP, VP8 decode, BGR, JPEG q30, store."""
BUDGET_BYTES = 0.9 * 40_000_000
STILLS = 3000
"""600 s at 5 stored fps."""
CANDIDATES = [("jpeg", q) for q in (30, 40, 50, 60, 70, 80)] + [
    ("webp", q) for q in (30, 50, 70, 80, 90)]
VIDEO_CANDIDATES = [("veryfast", crf, 10) for crf in (23, 28)] + [
    ("ultrafast", crf, 10) for crf in (23, 28, 33)] + [("ultrafast", 28, 25)]
"""Storing video instead of stills: x264 at ``preset`` and ``crf`` (no B-frames, one
thread) with a keyframe every ``gop`` frames; a stored frame is then decoded on demand,
from its GOP's keyframe on."""
SPEC = "testsrc:events=person,period=20,duration=6,size=640x480"
STORE_FORMAT = "jpeg"
"""What the server's frame store keeps today: the goal is judged on it; the other
candidates say what a different store would give."""


def received_frames(seconds: float, fps: float) -> list[np.ndarray]:
    """The scene through aiortc's VP8 encoder and decoder: BGR frames as the ingest has them."""
    from aiortc.codecs import get_decoder, get_encoder
    from aiortc.codecs.vpx import vp8_depayload
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from av import VideoFrame

    from watcher.media.testsrc import SyntheticScene

    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    encoder, decoder = get_encoder(codec), get_decoder(codec)
    scene = SyntheticScene.from_spec(SPEC, fps=fps)
    out = []
    for n in range(round(seconds * fps)):
        frame = VideoFrame.from_ndarray(scene.frame(n), format="bgr24")
        frame.pts, frame.time_base = round(n * 90000 / fps), Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=n == 0)
        data = b"".join(vp8_depayload(p) for p in payloads)
        for decoded in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            out.append(decoded.to_ndarray(format="bgr24"))
    return out


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grey images (uint8), Gaussian window 11x11, sigma 1.5."""
    import cv2

    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float((num / den)[5:-5, 5:-5].mean())


def measure(frames: list[np.ndarray]) -> list[dict[str, Any]]:
    import cv2

    rows = []
    greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    for kind, quality in CANDIDATES:
        params = ([cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
                  if kind == "jpeg" else [cv2.IMWRITE_WEBP_QUALITY, quality])
        sizes, scores, encode_ms, decode_ms = [], [], [], []
        for frame, grey in zip(frames, greys, strict=True):
            t0 = time.thread_time()
            ok, buf = cv2.imencode(f".{kind}", frame, params)
            t1 = time.thread_time()
            if not ok:
                raise RuntimeError(f"{kind} q{quality}: encoding failed")
            back = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
            t2 = time.thread_time()
            sizes.append(len(buf))
            scores.append(ssim(grey, back))
            encode_ms.append(1000 * (t1 - t0))
            decode_ms.append(1000 * (t2 - t1))
        mean_bytes = statistics.fmean(sizes)
        encode_cpu = statistics.fmean(encode_ms)
        rows.append({"format": kind, "quality": quality, "frames": len(sizes),
                     "mean_bytes": mean_bytes, "bytes_600s": mean_bytes * STILLS,
                     "ssim_mean": statistics.fmean(scores), "ssim_min": min(scores),
                     "encode_ms": encode_cpu, "decode_ms": statistics.fmean(decode_ms)})
    base = next(r for r in rows if (r["format"], r["quality"]) == ("jpeg", 30))
    for r in rows:
        r["ingest_growth"] = (r["encode_ms"] - base["encode_ms"]) / INGEST_MS_PER_FRAME
    return rows


def measure_video(frames: list[np.ndarray], fps: float) -> list[dict[str, Any]]:
    """Each (preset, crf, gop) candidate: the frames as one H.264 stream, decoded back.

    ``decode_ms`` is one frame's decode in sequence; fetching one stored frame on demand
    costs up to ``gop`` of them (``random_access_ms``: the mean over every frame of the
    decodes from its keyframe), which a cache of decoded frames would share between
    neighbouring asks.
    """
    import av
    import cv2

    greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    rows = []
    for preset, crf, gop in VIDEO_CANDIDATES:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height = frames[0].shape[1], frames[0].shape[0]
        encoder.pix_fmt, encoder.time_base = "yuv420p", Fraction(1, round(fps))
        encoder.thread_count = 1
        encoder.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency",
                           "g": str(gop), "keyint_min": str(gop), "bf": "0",
                           "sc_threshold": "0"}
        packets, encode_ms = [], []
        for n, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="bgr24")
            t0 = time.thread_time()
            picture = picture.reformat(format="yuv420p", threads=1)
            picture.pts = n
            packets += encoder.encode(picture)
            encode_ms.append(1000 * (time.thread_time() - t0))
        packets += encoder.encode(None)
        decoder = av.CodecContext.create("h264", "r")
        decoder.thread_count = 1
        scores, decode_ms, decoded = [], [], []
        for packet in packets:
            t0 = time.thread_time()
            out = decoder.decode(packet)
            decode_ms.append(1000 * (time.thread_time() - t0))
            decoded += out
        decoded += decoder.decode(None)
        for grey, picture in zip(greys, decoded, strict=True):
            scores.append(ssim(grey, picture.to_ndarray(format="gray", threads=1)))
        per_frame = statistics.fmean(decode_ms)
        total = sum(p.size for p in packets)
        rows.append({"format": f"H.264 {preset} GOP {gop}", "quality": f"crf {crf}",
                     "frames": len(decoded), "mean_bytes": total / len(frames),
                     "bytes_600s": total / len(frames) * STILLS,
                     "ssim_mean": statistics.fmean(scores), "ssim_min": min(scores),
                     "encode_ms": statistics.fmean(encode_ms), "decode_ms": per_frame,
                     "random_access_ms": per_frame * (gop + 1) / 2})
    return rows


def fits(row: dict[str, Any]) -> bool:
    return (row["bytes_600s"] <= BUDGET_BYTES and row["ssim_mean"] >= GOAL_SSIM
            and row["ingest_growth"] <= GOAL_INGEST_GROWTH)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="seconds of the scene (one person crossing in each 20 s)")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), seconds=1.0)
    machine = _common.machine_info()
    frames = received_frames(args.seconds, args.fps)
    rows = measure(frames)
    base = next(r for r in rows if (r["format"], r["quality"]) == ("jpeg", 30))
    for row in measure_video(frames, args.fps):
        row["ingest_growth"] = (row["encode_ms"] - base["encode_ms"]) / INGEST_MS_PER_FRAME
        rows.append(row)
    if args.json:
        _common.emit_json({"benchmark": "still_quality", "machine": machine, "rows": rows})
    print(f"Machine: {_common.describe_machine(machine)}")
    _common.print_table(
        f"Stills of {len(frames)} received 640x480 frames: bytes for 600 s at 5 fps against "
        f"the {BUDGET_BYTES / 1e6:.0f} MB the server aims at, and SSIM (luma) against the "
        "received frame (goal: fits, SSIM >= 0.97, ingest CPU +50 % at most)",
        ["format", "quality", "mean per frame", "600 s at 5 fps", "SSIM mean", "SSIM min",
         "encode CPU ms", "decode CPU ms", "one frame on demand ms", "ingest CPU growth",
         "fits the goal"],
        [[r["format"], r["quality"], f"{r['mean_bytes'] / 1000:.1f} KB",
          f"{r['bytes_600s'] / 1e6:.1f} MB", f"{r['ssim_mean']:.4f}", f"{r['ssim_min']:.4f}",
          f"{r['encode_ms']:.2f}", f"{r['decode_ms']:.2f}",
          f"{r.get('random_access_ms', r['decode_ms']):.2f}",
          f"{100 * r['ingest_growth']:+.0f}%", "yes" if fits(r) else "no"]
         for r in rows])
    check = _verdict.Verdict("still_quality")
    check.require(len(frames) >= round(args.seconds * args.fps) - 1,
                  f"{len(frames)} frames decoded of {round(args.seconds * args.fps)}")
    check.require(all(r["frames"] == len(frames) for r in rows), "a candidate skipped frames")
    good = [r for r in rows if fits(r)]
    best = min(good, key=lambda r: r["bytes_600s"]) if good else None
    jpeg30 = next(r for r in rows if (r["format"], r["quality"]) == ("jpeg", 30))
    stored = [r for r in good if r["format"] == STORE_FORMAT]
    summary = (f"the store keeps {STORE_FORMAT.upper()} stills: " + (
        "one fits" if stored else "none fits") + f" (baseline q30: "
        f"{jpeg30['bytes_600s'] / 1e6:.1f} MB, SSIM {jpeg30['ssim_mean']:.4f}); " + (
            f"smallest candidate that fits: {best['format']} {best['quality']} "
            f"({best['bytes_600s'] / 1e6:.1f} MB, SSIM {best['ssim_mean']:.4f}, ingest CPU "
            f"{100 * best['ingest_growth']:+.0f}%)" if best else "no candidate fits"))
    return check.finish(bool(stored), summary)


if __name__ == "__main__":
    _verdict.run_main(main)
