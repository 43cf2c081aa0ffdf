"""Adaptive JPEG quality: frames fit the per-stream byte budget."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from watcher.media.testsrc import SyntheticScene
from watcher.server.encode import JpegEncoder, frame_budget


def test_frame_budget() -> None:
    assert frame_budget(40_000_000, 600, 5) == 12_000  # 0.9 * 40 MB / 3000 frames
    assert frame_budget(40_000_000, 600, 0) == 60_000  # no fps yet: counted as 1
    assert frame_budget(1, 600, 30) == 1


def test_quality_follows_the_budget() -> None:
    scene = SyntheticScene(seed=0)
    encoder = JpegEncoder(80, 30)
    jpeg = encoder.encode(scene.frame(0), 10**9)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)
    full = len(jpeg)
    budget = full // 2
    sizes = [len(encoder.encode(scene.frame(n), budget)) for n in range(1, 40)]
    assert encoder.quality < 80
    assert sum(sizes[-5:]) / 5 <= budget * 1.05
    # A generous budget brings the quality back up.
    for n in range(40, 80):
        encoder.encode(scene.frame(n), full * 3)
    assert encoder.quality == 80


def test_quality_never_below_minimum() -> None:
    encoder = JpegEncoder(80, 40)
    scene = SyntheticScene(320, 240)
    for n in range(30):
        encoder.encode(scene.frame(n), 100)
    assert encoder.quality == 40


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        JpegEncoder(20, 30)
