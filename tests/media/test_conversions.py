"""Frame conversions start no threads: FFmpeg's scaler, left at its automatic thread
count, starts a pool (one thread per core) for every conversion, which a daemon
converting every frame of many cameras pays for in threads and CPU.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
from support.skips import skip_or_fail

from watcher.media.changes import thumbnail
from watcher.media.tracks import to_bgr

PACKAGE = Path(__file__).resolve().parents[2] / "watcher"
MARKER = "conversions-start"

CONVERT = f"""
import sys
import av, numpy as np
from av.video.reformatter import VideoReformatter
from watcher.console.clips import to_jpeg
from watcher.media.changes import thumbnail
from watcher.media.tracks import to_bgr
image = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
nv12 = frame.reformat(format="nv12", threads=1)
rgb = frame.reformat(format="rgb24", threads=1)
scaler = VideoReformatter()
sys.stdout.write("{MARKER}\\n"); sys.stdout.flush()
for _ in range(5):
    to_bgr(frame); to_bgr(frame, scaler); to_jpeg(frame, 320, scaler)
    thumbnail(frame); thumbnail(nv12); thumbnail(rgb)
sys.stdout.write("conversions-done\\n"); sys.stdout.flush()
"""


def test_converting_frames_starts_no_thread(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        skip_or_fail("strace is not installed")
    log = tmp_path / "strace.log"
    done = subprocess.run(
        [strace, "-f", "-qq", "-o", str(log), "-e", "trace=clone,clone3,write",
         sys.executable, "-c", CONVERT], capture_output=True, text=True, check=False,
        cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = log.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if MARKER in line)
    end = next(i for i, line in enumerate(lines) if "conversions-done" in line)
    clones = [line for line in lines[start:end] if "clone" in line]
    assert clones == [], "\n".join(clones)


def test_to_bgr_with_a_kept_scaler_matches_a_fresh_one() -> None:
    from av.video.reformatter import VideoReformatter

    rng = np.random.default_rng(2)
    scaler = VideoReformatter()
    for _ in range(3):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(
            format="yuv420p", threads=1)
        kept, fresh = to_bgr(frame, scaler), to_bgr(frame)
        assert kept.shape == (48, 64, 3)
        assert np.array_equal(kept, fresh)
        assert to_bgr(image) is image
        assert thumbnail(frame).shape == (24, 32)


def _converting_calls_without_threads() -> list[str]:
    """Calls in the package that convert a frame without naming the thread count."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            keywords = {k.arg for k in node.keywords}
            converts = node.func.attr == "reformat" or (
                node.func.attr == "to_ndarray" and "format" in keywords)
            if converts and "threads" not in keywords:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def test_every_conversion_in_the_package_names_its_thread_count() -> None:
    assert _converting_calls_without_threads() == []
