"""The synthetic scene: spec grammar, determinism and event ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from watcher.media.testsrc import (
    SceneSpec,
    SyntheticScene,
    TestSource,
    event_active,
    is_spec,
    parse_spec,
)


def test_bare_spec_is_a_static_scene() -> None:
    spec = parse_spec("testsrc")
    assert spec == SceneSpec()
    assert spec.events == () and (spec.width, spec.height, spec.fps) == (640, 480, 5.0)
    assert not any(event_active("testsrc", t / 2) for t in range(120))


def test_spec_options() -> None:
    spec = parse_spec("testsrc:events=box+person,period=10,duration=4,start=1,size=320x240,"
                      "fps=10,seed=3,noise=0,clock=0")
    assert spec == SceneSpec(width=320, height=240, fps=10, seed=3, noise=0,
                             events=("box", "person"), period=10, duration=4, start=1,
                             clock=False)
    assert parse_spec("testsrc:events=none").events == ()
    assert is_spec("testsrc") and is_spec("testsrc:events=box") and not is_spec("testsrc2")


@pytest.mark.parametrize("text", [
    "rtsp://camera", "testsrc:events=cat", "testsrc:period", "testsrc:period=",
    "testsrc:period=abc", "testsrc:size=320", "testsrc:size=321x240", "testsrc:fps=0",
    "testsrc:duration=30", "testsrc:period=5,period=6", "testsrc:colour=red",
    "testsrc:clock=2", "testsrc:start=-1", "testsrc:noise=nan",
])
def test_bad_specs_fail(text: str) -> None:
    with pytest.raises(ValueError):
        parse_spec(text)


def test_event_schedule_is_ground_truth() -> None:
    scene = SyntheticScene.from_spec("testsrc:events=box,period=20,duration=6,start=2")
    assert [scene.event_active(t) for t in (0, 1.99, 2, 7.99, 8, 21.9, 22, 28)] == [
        False, False, True, True, False, False, True, False]
    assert event_active("testsrc:events=box,period=20,duration=6,start=2", 5)
    assert scene.active_events(3) == ("box",) and scene.active_events(9) == ()


@pytest.mark.parametrize("kind", ["box", "person"])
def test_event_is_drawn_inside_its_box(kind: str) -> None:
    scene = SyntheticScene(320, 240, fps=10, events=(kind,), start=0, period=10, duration=5,
                           noise=0, clock=False)
    quiet = scene.frame(60)  # t = 6 s: no event
    assert np.array_equal(quiet, scene.background)
    for n in (0, 24, 49):
        x, y, w, h = scene.event_box(kind, n / 10)
        assert 0 <= x and x + w <= 320 and 0 <= y and y + h <= 240
        diff = np.abs(scene.frame(n).astype(int) - quiet.astype(int)).sum(axis=2) > 0
        ys, xs = np.nonzero(diff)
        assert len(xs) > 0.1 * w * h
        assert xs.min() >= x - 2 and xs.max() <= x + w + 1
        assert ys.min() >= y - 2 and ys.max() <= y + h + 1
    assert scene.event_box(kind, 6) is None


def test_frames_are_deterministic_noisy_and_camera_like() -> None:
    a, b = SyntheticScene(seed=1), SyntheticScene(seed=1)
    assert np.array_equal(a.frame(7), b.frame(7))
    assert a.frame(7).shape == (480, 640, 3) and a.frame(7).dtype == np.uint8
    assert not np.array_equal(a.frame(7), a.frame(8))  # sensor noise and clock
    assert not np.array_equal(a.background, SyntheticScene(seed=2).background)
    assert np.array_equal(a.frame_at(1.4), a.frame(7))
    size = len(cv2.imencode(".jpg", a.frame(7), [cv2.IMWRITE_JPEG_QUALITY, 80])[1])
    assert 15_000 < size < 80_000  # compresses like a camera frame, not a flat card


def test_keyword_overrides_win_and_alias() -> None:
    scene = TestSource.from_spec("testsrc:size=320x240,fps=10", width=160, height=120)
    assert (scene.width, scene.height, scene.fps) == (160, 120, 10)
    assert scene(3).shape == (120, 160, 3)
    assert TestSource is SyntheticScene


def test_wall_clock_scenes_agree_across_processes_started_apart() -> None:
    import time

    from watcher.media.sources import open_source
    from watcher.media.tracks import LatestFrame

    # the box is always on screen, at a place that depends on the (wall clock) time
    spec = ("testsrc:events=box,period=1,duration=1,start=0,size=64x48,fps=10,noise=0,"
            "clock=0,wall=1")
    assert parse_spec(spec).wall
    frames: list[tuple[float, object]] = []
    source = open_source(spec, fps=10, width=64, height=48, loop=False, sink=LatestFrame(),
                         on_frame=lambda frame, at: frames.append((time.time(), frame)),
                         name="wall")
    source.start()
    try:
        for _ in range(2000):
            if len(frames) >= 3:
                break
            time.sleep(0.01)
    finally:
        source.request_stop()
    scene = SyntheticScene.from_spec(spec)
    at, frame = frames[-1]
    n = round(at * 10)  # the frame of that Unix time, give or take one
    assert any(np.array_equal(frame, scene.frame(k)) for k in (n - 2, n - 1, n, n + 1))
    assert not any(np.array_equal(frame, scene.frame(k)) for k in (n - 5, n + 5))


def test_scenes_of_one_look_share_their_planes() -> None:
    a = SyntheticScene.from_spec("testsrc:seed=4", fps=2)
    b = SyntheticScene.from_spec("testsrc:events=person,seed=4", fps=5)
    assert a.background is b.background and a._noise[0] is b._noise[0]
    assert SyntheticScene(seed=5).background is not a.background
    assert not a.background.flags.writeable  # shared, so nobody may draw on it
    frame = a.frame(3)
    assert frame.flags.writeable and not np.shares_memory(frame, a.background)


@pytest.mark.parametrize(("seed", "sigma"), [(0, 2.0), (3, 40.0), (1, 300.0)])
def test_noise_is_the_camera_like_mix_of_one_draw(seed: int, sigma: float) -> None:
    """Rendered a frame at a time, the noise is exactly the all-at-once formula's."""
    rng = np.random.default_rng(seed + 7)
    noise = rng.normal(0.0, sigma, size=(4, 24, 32, 3))
    noise = 0.7 * noise[..., :1] + 0.3 * noise
    noise = np.clip(np.rint(noise), -255, 255).astype(np.int16)
    positive, negative = SyntheticScene(32, 24, seed=seed, noise=sigma)._noise
    assert np.array_equal(positive, np.clip(noise, 0, 255).astype(np.uint8))
    assert np.array_equal(negative, np.clip(-noise, 0, 255).astype(np.uint8))
