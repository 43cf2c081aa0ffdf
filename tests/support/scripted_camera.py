"""A keeper's camera whose scene the test scripts: a box crosses the room while ``event`` is set.

:func:`script_source` makes a keeper open one instead of its configured
source. The camera draws a frame every 100 ms on its own thread (10 fps) and
counts them in :attr:`ScriptedCamera.frames`, so a test can wait for frames
drawn rather than for time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from watcher.media.sources import SourceStats
from watcher.media.testsrc import SyntheticScene

FRAME_S = 0.1
EVENT_AT = 100.0
"""Scene time of the box's event (the scene has one, every 1000 s)."""
IDLE_AT = 10.0
"""Scene time of the empty room."""
IDLE_SPAN_S = 80.0
"""A ticking camera's empty room runs from ``IDLE_AT`` for this long, then again."""


class ScriptedCamera:
    """A synthetic camera with sensor noise; while ``event`` is set, a box crosses the room
    in ``crossing_s`` of scene time, again and again.

    ``ticking``: a clock overlay and scene time that runs on in the empty room too (a
    picture that keeps changing a little, as real cameras' timestamps do); otherwise the
    empty room is one still frame.
    """

    def __init__(self, sink: Any, on_frame: Callable[[np.ndarray, float], None], *,
                 size: tuple[int, int] = (320, 240), crossing_s: float = 50.0,
                 ticking: bool = True) -> None:
        width, height = size
        self.scene = SyntheticScene(width, height, fps=10, events=("box",), period=1000,
                                    duration=crossing_s, start=EVENT_AT, noise=2,
                                    clock=ticking)
        self.sink, self.on_frame = sink, on_frame
        self.crossing_s = crossing_s
        self.ticking = ticking
        self.event = False
        self.frames = 0
        """Frames drawn so far."""
        self._stop = threading.Event()
        self.stats = SourceStats(state="live")

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    async def stop(self) -> None:
        self._stop.set()

    def scene_time(self) -> float:
        """Where in the scene the next frame is."""
        elapsed = (self.frames + 1) * FRAME_S
        if self.event:
            return EVENT_AT + elapsed % self.crossing_s
        return IDLE_AT + elapsed % IDLE_SPAN_S if self.ticking else IDLE_AT

    def _run(self) -> None:
        while not self._stop.wait(FRAME_S):
            frame = np.ascontiguousarray(self.scene.frame_at(self.scene_time()))
            self.sink.put(frame)
            self.on_frame(frame, time.monotonic())
            self.frames += 1


def script_source(keeper: Any, **options: Any) -> Callable[[], ScriptedCamera]:
    """Make ``keeper`` open a :class:`ScriptedCamera` (``options``) at each start of its
    source; returns a function giving the newest one."""
    cameras: list[ScriptedCamera] = []

    def factory(spec: Any, sink: Any, on_frame: Callable[[np.ndarray, float], None],
                ) -> ScriptedCamera:
        cameras.append(ScriptedCamera(sink, on_frame, **options))
        return cameras[-1]

    keeper._source_factory = factory
    return lambda: cameras[-1]
