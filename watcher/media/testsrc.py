"""A synthetic, camera-like scene for demos, tests and benchmarks.

Frames are BGR ``uint8`` arrays computed deterministically from a frame
number (or a time): a textured static background (a wall with gradients,
bricks, a door and a window, a floor with tiles), mild per-frame sensor noise
so it compresses like a camera rather than like a flat test card, a small
timestamp overlay, and scripted events whose schedule is known exactly, so
tests have ground truth.

Spec grammar (``watcher publish --source testsrc:...`` and friends)::

    spec     := "testsrc" [ ":" option { "," option } ]
    option   := key "=" value
    events   := kind { "+" kind }        kind: box | person | none
    period   := seconds (float > 0)      an event starts every period seconds  [20]
    duration := seconds (0 < d <= period) and stays visible that long          [6]
    start    := seconds (float >= 0)     first appearance                       [2]
    size     := WIDTHxHEIGHT                                                    [640x480]
    fps      := frames per second (> 0)                                         [5]
    seed     := int                      varies background colours and texture  [0]
    noise    := sensor noise sigma in grey levels (>= 0)                        [2]
    clock    := 0 | 1                    draw the time overlay                  [1]
    wall     := 0 | 1                    scene time is the wall clock (Unix time) [0]

``testsrc`` alone is the static scene with noise. Examples::

    testsrc:events=box,period=20,duration=6
    testsrc:events=person,start=0,period=10,duration=4,size=320x240,fps=10

With ``wall=1`` the scene's time is Unix time rather than time since the source
opened, so every process showing the same spec shows the same picture at the
same moment, as a real camera does for whoever reads it (cluster tests hand a
camera from one instance to another in the middle of an event).

An event ``k`` (k = 0, 1, ...) is active for ``start + k*period <= t <
start + k*period + duration``; while active the object is entirely inside
the frame, crossing it from left to right (see :meth:`SyntheticScene.event_box`
for its exact rectangle). ``size`` and ``fps`` may also be given as keyword
arguments, which win over the spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

EventKind = Literal["box", "person"]
EVENT_KINDS: tuple[EventKind, ...] = ("box", "person")
SPEC_PREFIX = "testsrc"
_NOISE_FRAMES = 4


@dataclass(frozen=True, slots=True)
class SceneSpec:
    """Everything that determines a synthetic scene; parsed from a spec string."""

    width: int = 640
    height: int = 480
    fps: float = 5.0
    seed: int = 0
    noise: float = 2.0
    events: tuple[EventKind, ...] = ()
    period: float = 20.0
    duration: float = 6.0
    start: float = 2.0
    clock: bool = True
    wall: bool = False

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError("size must be at least 16x16, with even width and height")
        if not self.fps > 0:
            raise ValueError("fps must be > 0")
        if self.noise < 0:
            raise ValueError("noise must be >= 0")
        if not self.period > 0:
            raise ValueError("period must be > 0")
        if not 0 < self.duration <= self.period:
            raise ValueError("duration must be > 0 and at most the period")
        if self.start < 0:
            raise ValueError("start must be >= 0")
        for kind in self.events:
            if kind not in EVENT_KINDS:
                raise ValueError(f"unknown event {kind!r}; known: {', '.join(EVENT_KINDS)}")


def is_spec(text: str) -> bool:
    """Whether ``text`` names a synthetic source (``testsrc`` or ``testsrc:...``)."""
    return text == SPEC_PREFIX or text.startswith(SPEC_PREFIX + ":")


def parse_spec(text: str) -> SceneSpec:
    """Parse ``testsrc[:key=value,...]``; raises ValueError naming the bad part."""
    if not is_spec(text):
        raise ValueError(f"a synthetic source spec starts with {SPEC_PREFIX!r}: {text!r}")
    options = text[len(SPEC_PREFIX) + 1:]
    values: dict[str, object] = {}
    for item in filter(None, (s.strip() for s in options.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise ValueError(f"testsrc option {item!r} must be key=value")
        if key in values or (key == "size" and "width" in values):
            raise ValueError(f"testsrc option {key!r} given twice")
        try:
            _parse_option(key, value, values)
        except ValueError as exc:
            raise ValueError(f"testsrc option {item!r}: {exc}") from exc
    return SceneSpec(**values)  # type: ignore[arg-type]


def _parse_option(key: str, value: str, out: dict[str, object]) -> None:
    if key == "events":
        kinds = tuple(k.strip().lower() for k in value.split("+") if k.strip())
        out["events"] = tuple(k for k in kinds if k != "none")
        for kind in out["events"]:  # type: ignore[attr-defined]
            if kind not in EVENT_KINDS:
                raise ValueError(f"unknown event kind; known: none, {', '.join(EVENT_KINDS)}")
    elif key == "size":
        width, sep, height = value.lower().partition("x")
        if not sep:
            raise ValueError("size must be WIDTHxHEIGHT")
        out["width"], out["height"] = int(width), int(height)
    elif key in {"fps", "period", "duration", "start", "noise"}:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        out[key] = number
    elif key == "seed":
        out["seed"] = int(value)
    elif key in {"clock", "wall"}:
        if value not in {"0", "1"}:
            raise ValueError(f"{key} must be 0 or 1")
        out[key] = value == "1"
    else:
        raise ValueError("unknown key; known: events, period, duration, start, size, fps, "
                         "seed, noise, clock, wall")


@dataclass(eq=False)
class SyntheticScene:
    """Renders frame ``n`` (at ``t = n / fps``) of a :class:`SceneSpec`.

    ``SyntheticScene(width=320, height=240, fps=10, events=("box",))`` or
    ``SyntheticScene.from_spec("testsrc:events=box,period=10")``.
    """

    __test__ = False  # not a pytest test class despite the TestSource alias

    width: int = 640
    height: int = 480
    fps: float = 5.0
    seed: int = 0
    events: tuple[EventKind, ...] | list[EventKind] = ()
    period: float = 20.0
    duration: float = 6.0
    start: float = 2.0
    noise: float = 2.0
    clock: bool = True
    wall: bool = False
    """Frame numbers count from the Unix epoch (the source does that; the scene only
    carries the flag)."""
    spec: SceneSpec = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.spec = SceneSpec(
            width=self.width, height=self.height, fps=float(self.fps), seed=self.seed,
            noise=float(self.noise), events=tuple(self.events), period=float(self.period),
            duration=float(self.duration), start=float(self.start), clock=self.clock,
            wall=self.wall,
        )
        self.events = self.spec.events

    @classmethod
    def from_spec(cls, spec: str | SceneSpec, **overrides: object) -> SyntheticScene:
        """A scene from a spec string; keyword arguments (e.g. ``fps``) win over it."""
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        parsed = replace(parsed, **{k: v for k, v in overrides.items() if v is not None})
        return cls(**{name: getattr(parsed, name) for name in SceneSpec.__dataclass_fields__})

    # -- ground truth ----------------------------------------------------------
    def time_of(self, n: int) -> float:
        return n / self.fps

    def event_phase(self, t: float) -> float | None:
        """Progress (0..1) through the event active at ``t``, or None when none is."""
        if not self.events or t < self.start:
            return None
        into = (t - self.start) % self.period
        if into >= self.duration:
            return None
        return into / self.duration

    def event_active(self, t: float) -> bool:
        """Whether the scripted objects are visible at time ``t`` (seconds)."""
        return self.event_phase(t) is not None

    def active_events(self, t: float) -> tuple[EventKind, ...]:
        return self.events if self.event_active(t) else ()  # type: ignore[return-value]

    def event_box(self, kind: EventKind, t: float) -> tuple[int, int, int, int] | None:
        """The rectangle ``(x, y, w, h)`` object ``kind`` covers at ``t``, if visible."""
        phase = self.event_phase(t)
        if phase is None or kind not in self.events:
            return None
        w, h = self.width, self.height
        if kind == "box":
            bw, bh = max(4, w // 6), max(4, h // 5)
            y = int(h * 0.55)
        else:
            bh = max(8, int(h * 0.42))
            bw = max(4, bh // 3)
            y = int(h * 0.93) - bh
        x = round(w * 0.05 + phase * (w * 0.90 - bw))
        return x, y, bw, bh

    # -- rendering ---------------------------------------------------------------
    def frame(self, n: int) -> np.ndarray:
        """Frame number ``n`` as a BGR ``uint8`` array of shape (height, width, 3)."""
        t = self.time_of(n)
        image = self.background.copy()
        for kind in self.active_events(t):
            self._draw_event(image, kind, t, n)
        if self.noise > 0:
            positive, negative = self._noise
            shift = (n * 7919) % (self.width * self.height)
            k = n % _NOISE_FRAMES
            pos = np.roll(positive[k].reshape(-1, 3), shift, axis=0).reshape(image.shape)
            neg = np.roll(negative[k].reshape(-1, 3), shift, axis=0).reshape(image.shape)
            cv2.add(image, pos, dst=image)
            cv2.subtract(image, neg, dst=image)
        if self.clock:
            self._draw_clock(image, n, t)
        return image

    def frame_at(self, t: float) -> np.ndarray:
        """The frame shown at time ``t`` (seconds since the scene started)."""
        return self.frame(math.floor(t * self.fps + 1e-9))

    def __call__(self, n: int, t: float | None = None) -> np.ndarray:
        """Frame producer protocol of :class:`~watcher.media.tracks.FrameTrack`."""
        return self.frame(n) if t is None else self.frame_at(t)

    @property
    def background(self) -> np.ndarray:
        """The static scene (read-only: shared by every scene of the same look)."""
        return _planes(self.width, self.height, self.seed, self.noise)[0]

    @property
    def _noise(self) -> tuple[np.ndarray, np.ndarray]:
        return _planes(self.width, self.height, self.seed, self.noise)[1:]

    def _draw_event(self, image: np.ndarray, kind: EventKind, t: float, n: int) -> None:
        box = self.event_box(kind, t)
        if box is None:
            return
        x, y, w, h = box
        if kind == "box":
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (40, 230, 255), -1)
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (10, 60, 90), max(1, w // 30))
            return
        _draw_person(image, x, y, w, h, stride=(n % 4) / 4)

    def _draw_clock(self, image: np.ndarray, n: int, t: float) -> None:
        # Zero-padded, so every string has the same glyphs' widths: the overlay never
        # shifts as the numbers grow, and only the digits that change differ between frames.
        scale = max(0.3, self.height / 960)
        text = f"{t:09.2f}s #{n:08d}"
        thickness = max(1, round(scale * 2))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x, y = self.width - tw - 6, th + 6
        cv2.rectangle(image, (x - 3, y - th - 3), (x + tw + 3, y + base), (0, 0, 0), -1)
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235),
                    thickness, cv2.LINE_AA)


TestSource = SyntheticScene
"""Alias: the synthetic source under the name used by demos and benchmarks."""


def event_active(scene: SyntheticScene | SceneSpec | str, t: float) -> bool:
    """Ground truth: whether a scene (or spec) shows its scripted event at ``t`` seconds."""
    if not isinstance(scene, SyntheticScene):
        scene = SyntheticScene.from_spec(scene)
    return scene.event_active(t)


def _draw_person(image: np.ndarray, x: int, y: int, w: int, h: int, *, stride: float) -> None:
    """A pedestrian-like figure filling the box (x, y, w, h): head, torso, arms, legs."""
    cx = x + w // 2
    head_r = max(2, h // 14)
    skin, shirt, trousers = (120, 150, 200), (60, 40, 170), (70, 50, 40)
    cv2.circle(image, (cx, y + head_r + 1), head_r, skin, -1, cv2.LINE_AA)
    torso_top, torso_bottom = y + 2 * head_r + 2, y + int(h * 0.58)
    cv2.rectangle(image, (x + w // 5, torso_top), (x + w - 1 - w // 5, torso_bottom), shirt, -1)
    limb = max(2, w // 6)
    # Keep the thick, round-capped limbs inside the box.
    swing = int(max(0, w // 2 - limb) * math.sin(stride * 2 * math.pi))
    cv2.line(image, (cx, torso_top + 2), (cx - swing, torso_bottom), shirt, limb, cv2.LINE_AA)
    cv2.line(image, (cx, torso_top + 2), (cx + swing, torso_bottom), shirt, limb, cv2.LINE_AA)
    foot_y = y + h - 2 - limb // 2
    cv2.line(image, (cx, torso_bottom), (cx - swing, foot_y), trousers, limb, cv2.LINE_AA)
    cv2.line(image, (cx, torso_bottom), (cx + swing, foot_y), trousers, limb, cv2.LINE_AA)


@lru_cache(maxsize=8)
def _planes(width: int, height: int, seed: int,
            noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background and sensor-noise planes of a scene, computed once per look and shared.

    Every camera of the same spec shows the same room and noise, so they share these
    8 MB (640x480) instead of each holding its own copy. Read-only, since shared.
    """
    background = _render_background(width, height, seed)
    positive, negative = _render_noise(width, height, seed, noise)
    for plane in (background, positive, negative):
        plane.flags.writeable = False
    return background, positive, negative


def _render_noise(width: int, height: int, seed: int,
                  sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``_NOISE_FRAMES`` frames of sensor noise, split into what to add and to subtract.

    One frame at a time and in place: computing all frames at once in float64 peaked
    at over 100 MB of temporaries per scene, which glibc kept in the rendering
    thread's malloc arena long after. The values are the same either way (the
    generator draws the same sequence, and each step is the same float operation).
    """
    rng = np.random.default_rng(seed + 7)
    positive = np.empty((_NOISE_FRAMES, height, width, 3), dtype=np.uint8)
    negative = np.empty_like(positive)
    for k in range(_NOISE_FRAMES):
        noise = rng.normal(0.0, sigma, size=(height, width, 3))
        # Camera noise is mostly luma: share most of it across channels.
        luma = noise[..., :1] * 0.7
        noise *= 0.3
        noise += luma
        del luma
        np.rint(noise, out=noise)
        positive[k] = np.clip(noise, 0, 255).astype(np.uint8)
        np.negative(noise, out=noise)
        negative[k] = np.clip(noise, 0, 255).astype(np.uint8)
    return positive, negative


def _render_background(width: int, height: int, seed: int) -> np.ndarray:
    """A static room-like scene: textured wall, door, window, tiled floor, a plant."""
    rng = np.random.default_rng(seed)
    horizon = int(height * 0.62)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    wall = np.array(rng.integers(120, 190, 3), dtype=np.float32)
    floor = np.array(rng.integers(60, 120, 3), dtype=np.float32)
    img = np.empty((height, width, 3), dtype=np.float32)
    # Wall: lit from the top-left; floor: darker towards the back.
    light = (1.1 - 0.35 * ys - 0.2 * xs)[..., None]
    img[:] = wall * light
    depth = ((ys - horizon / height) / (1 - horizon / height)).clip(0, 1)
    img[horizon:] = (floor * (0.7 + 0.4 * depth[:, :, None]) * (1.0 - 0.1 * xs[..., None]))[
        horizon:]
    # Fine texture: blurred noise at two scales (plaster, carpet grain).
    grain = rng.normal(0.0, 1.0, (height, width)).astype(np.float32)
    fine = cv2.GaussianBlur(grain, (0, 0), 0.8) * 6.0
    coarse = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32),
                              (0, 0), max(2.0, width / 80)) * 40.0
    img += (fine + coarse)[..., None]
    out = np.clip(img, 0, 255).astype(np.uint8)

    # Bricks along the lower wall.
    brick_h = max(4, height // 40)
    brick_w = brick_h * 3
    mortar = tuple(int(c * 0.75) for c in wall)
    top = int(horizon * 0.7)
    for row, yy in enumerate(range(top, horizon, brick_h)):
        cv2.line(out, (0, yy), (width - 1, yy), mortar, 1)
        for xx in range((row % 2) * brick_w // 2, width, brick_w):
            cv2.line(out, (xx, yy), (xx, min(horizon, yy + brick_h)), mortar, 1)
    # Floor tiles in perspective.
    vanish = (int(width * (0.4 + 0.2 * rng.random())), int(horizon * 0.4))
    edge = tuple(int(c * 0.6) for c in floor)
    for i in range(-6, 13):
        x_bottom = int(width * i / 6)
        x_horizon = vanish[0] + (x_bottom - vanish[0]) * (horizon - vanish[1]) // (
            height - vanish[1])
        cv2.line(out, (x_bottom, height - 1), (x_horizon, horizon), edge, 1, cv2.LINE_AA)
    for k in range(1, 7):
        yy = horizon + int((height - horizon) * (k / 7) ** 1.6)
        cv2.line(out, (0, yy), (width - 1, yy), edge, 1)
    # Door with a frame and a handle.
    dx, dw = int(width * (0.62 + 0.1 * rng.random())), int(width * 0.13)
    dy = int(height * 0.22)
    cv2.rectangle(out, (dx - 3, dy - 3), (dx + dw + 3, horizon), (40, 50, 60), -1)
    cv2.rectangle(out, (dx, dy), (dx + dw, horizon), (50, 90, 140), -1)
    for py in (dy + (horizon - dy) // 8, dy + (horizon - dy) // 2):
        cv2.rectangle(out, (dx + dw // 6, py), (dx + dw - dw // 6, py + (horizon - dy) // 3),
                      (40, 75, 120), 2)
    cv2.circle(out, (dx + dw - dw // 6, (dy + horizon) // 2), max(2, width // 200),
               (80, 190, 220), -1, cv2.LINE_AA)
    # Window with a sky gradient and mullions.
    wx, wy, ww, wh = int(width * 0.12), int(height * 0.12), int(width * 0.28), int(height * 0.28)
    sky = np.linspace(255, 170, wh, dtype=np.float32)[:, None, None] * np.array(
        [1.0, 0.85, 0.6], dtype=np.float32)
    out[wy:wy + wh, wx:wx + ww] = np.clip(sky, 0, 255).astype(np.uint8)
    cv2.rectangle(out, (wx, wy), (wx + ww, wy + wh), (230, 230, 225), max(2, width // 160))
    cv2.line(out, (wx + ww // 2, wy), (wx + ww // 2, wy + wh), (230, 230, 225), 2)
    cv2.line(out, (wx, wy + wh // 2), (wx + ww, wy + wh // 2), (230, 230, 225), 2)
    # A plant in a pot and a picture frame: small high-contrast details.
    px, py = int(width * 0.05), horizon + int((height - horizon) * 0.3)
    cv2.rectangle(out, (px, py), (px + width // 20, py + height // 14), (40, 70, 150), -1)
    for i in range(7):
        angle = math.pi * (0.15 + 0.7 * i / 6)
        tip = (int(px + width // 40 + math.cos(angle) * height // 8),
               int(py - math.sin(angle) * height // 7))
        cv2.line(out, (px + width // 40, py), tip, (40, 120 + 10 * i, 40), 2, cv2.LINE_AA)
    fx, fy = int(width * 0.46), int(height * 0.16)
    cv2.rectangle(out, (fx, fy), (fx + width // 10, fy + height // 8), (30, 30, 30), 3)
    cv2.circle(out, (fx + width // 20, fy + height // 16), max(2, height // 40),
               tuple(int(c) for c in rng.integers(40, 220, 3)), -1, cv2.LINE_AA)
    return out
