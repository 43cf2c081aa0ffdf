"""The ``clips:`` section: the short evidence video kept with each alert event.

::

    clips:
      enabled: true
      before: 5s            # from this long before the first matching answer's window
      after: 5s             # to this long after the firing
      max_length: 60s       # never longer (the start is moved up)
      fps: 5                # frames per second recorded (at most the stream's)
      width: 640            # frames wider than this are scaled down (height follows)
      format: mp4           # mp4 (H.264) | webm (VP8) | webp (animated)
      max_total_mb: 500     # all clips together; the oldest go first (the events stay)

Like :mod:`watcher.observe.config`, it does not import :mod:`watcher.config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from watcher.duration import Duration

ClipFormat = Literal["webm", "mp4", "webp"]
CONTENT_TYPES: dict[str, str] = {"webm": "video/webm", "mp4": "video/mp4",
                                 "webp": "image/webp"}


class ClipsConfig(BaseModel):
    """Evidence clips, built from the frames this daemon publishes."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Keep a short clip with each firing event "
                          "(streams the API server pulls get a snapshot only).")
    before: Duration = Field(5.0, ge=0, le=120, description="The clip starts this long "
                             "before the window of the first matching answer.")
    after: Duration = Field(5.0, ge=0, le=120, description="The clip ends this long after "
                            "the alert fired.")
    max_length: Duration = Field(60.0, gt=0, le=600, description="The longest clip; a longer "
                                 "span keeps its end.")
    fps: float = Field(5.0, gt=0, le=30, description="Frames per second recorded for clips "
                       "(at most the stream's fps).")
    width: int = Field(640, ge=64, le=1920, description="Frames wider than this are scaled "
                       "down for clips, keeping their aspect ratio.")
    format: ClipFormat = Field("mp4", description="mp4 (H.264: the smallest, see "
                               "BENCHMARKS.md), webm (VP8) or webp (animated WebP); all play "
                               "in current browsers.")
    max_total_mb: float = Field(500.0, gt=0, description="Budget of all stored clips "
                                "together; beyond it the oldest clips are dropped (the "
                                "alert events and their snapshots stay).")

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def buffer_s(self) -> float:
        """How much recent video each stream keeps in memory for clips."""
        return self.max_length + self.after + 5.0
