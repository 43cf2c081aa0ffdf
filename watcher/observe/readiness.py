"""Readiness: what ``/readyz`` answers, and why.

Ready means the state store takes writes and, for every stream:

* it is live: leased, its id exposed to rules, lease time left;
* it receives frames now: the API's last status read worked, a publisher is
  connected (or the API server pulls the camera itself), and the API's newest
  frame is no older than a few frame intervals (``5 / fps``, at least
  :data:`MIN_FRAME_AGE_S`; ``status.max_frame_age`` overrides it);
* the model answered: no rule on the stream has failed to get an answer since
  its last one.

``/readyz`` first reads each live stream's status from the API
(:meth:`~watcher.keeper.keeper.StreamKeeper.check_now`, at most every 0.5 s,
2 s timeout), so a stopped API server shows at the next probe. Metrics and
``/status`` judge from the last read the keeper made. The frame age is taken
at that read, and the read itself must be recent (:data:`STATUS_STALE_S`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from watcher.keeper.health import StreamHealth

FRAME_INTERVALS = 5
MIN_FRAME_AGE_S = 2.0
STATUS_STALE_S = 20.0
"""A stream whose status was last read longer ago than this is not ready (the keeper reads
it every few seconds)."""


@dataclass(frozen=True, slots=True)
class StreamReadiness:
    name: str
    ready: bool
    reason: str | None = None
    """Why it is not ready (None when ready)."""


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    streams: list[StreamReadiness]
    store_reason: str | None = None
    """Why the state store is not ready (None when it is)."""

    @property
    def ready(self) -> bool:
        return self.store_reason is None and all(s.ready for s in self.streams)

    def as_json(self) -> dict[str, Any]:
        not_ready: list[dict[str, Any]] = [{"stream": s.name, "reason": s.reason}
                                           for s in self.streams if not s.ready]
        if self.store_reason is not None:
            not_ready.append({"store": "state", "reason": self.store_reason})
        store: dict[str, Any] = {"ready": self.store_reason is None}
        if self.store_reason is not None:
            store["reason"] = self.store_reason
        return {"status": "ready" if self.ready else "not ready",
                "streams": {s.name: s.ready for s in self.streams}, "store": store,
                "not_ready": not_ready}

    def as_text(self) -> str:
        lines = ["ready" if self.ready else "not ready"]
        for s in self.streams:
            lines.append(f"stream {s.name}: " + ("ready" if s.ready else f"not ready: {s.reason}"))
        lines.append("state store: " + ("ready" if self.store_reason is None
                                        else f"not ready: {self.store_reason}"))
        return "\n".join(lines) + "\n"


def frame_age_limit_s(health: StreamHealth, configured_s: float | None) -> float:
    """How old the newest frame may be: the configured limit, else a few frame intervals."""
    if configured_s is not None:
        return configured_s
    return max(MIN_FRAME_AGE_S, FRAME_INTERVALS / (health.fps or 1.0))


def stream_readiness(health: StreamHealth, now_ms: int, max_frame_age_s: float | None,
                     model_errors: Iterable[str] = ()) -> StreamReadiness:
    """Whether one stream is ready; ``model_errors``: why its rules got no answer lately."""
    name = health.name
    if not health.live:
        why = f"state {health.state}"
        return StreamReadiness(name, False, f"{why}: {health.last_error}" if health.last_error
                               else why)
    if health.lease_remaining_s is None or health.lease_remaining_s <= 0:
        return StreamReadiness(name, False, "lease ran out")
    if health.status_error is not None:
        return StreamReadiness(name, False, health.status_error)
    if not health.pull and health.publisher_state not in (None, "connected"):
        return StreamReadiness(name, False, f"publisher {health.publisher_state}: not sending "
                               "frames")
    if health.last_frame_at_ms is None:
        return StreamReadiness(name, False, "no frame has reached the API yet")
    read_at = health.status_read_at_ms if health.status_read_at_ms is not None else now_ms
    if (now_ms - read_at) / 1000 > STATUS_STALE_S:
        return StreamReadiness(name, False, f"status not read for {(now_ms - read_at) / 1000:.0f}"
                               " s")
    age_s = max(0, read_at - health.last_frame_at_ms) / 1000
    limit_s = frame_age_limit_s(health, max_frame_age_s)
    if age_s > limit_s:
        return StreamReadiness(name, False, f"not receiving frames: the newest is {age_s:.1f} s "
                               f"old (more than {limit_s:g} s)")
    for error in model_errors:
        return StreamReadiness(name, False, f"model not answering: {error}")
    return StreamReadiness(name, True)
