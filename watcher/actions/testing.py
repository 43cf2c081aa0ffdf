"""``watcher test-action``: send one sample alert through one action, right now.

The sample is a realistic :class:`AlertEventRecord` (answer, labels, model,
usage, and a generated JPEG snapshot) taken from the first rule that notifies
the action, when there is one. It goes straight to the action: no outbox, no
retry, no rate limit, a fresh idempotency key each time, so receivers that
drop repeats still show every test.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import TextIO

import cv2
import httpx
import numpy as np

from watcher.actions.base import DeliveryError
from watcher.actions.config import build_action
from watcher.config import WatcherConfig
from watcher.configerrors import did_you_mean
from watcher.engine.state import Kind
from watcher.engine.store import AlertEventRecord
from watcher.logs import redact

SAMPLE_RULE = "test-action"
SAMPLE_STREAM = "test-camera"


def sample_snapshot(width: int = 640, height: int = 360) -> bytes:
    """A JPEG of a synthetic scene: a gradient, a 'person' box and a caption."""
    x = np.linspace(40, 160, width, dtype=np.float32)
    y = np.linspace(0, 60, height, dtype=np.float32)[:, None]
    gray = (x[None, :] + y).astype(np.uint8)
    image = cv2.merge([gray, gray, (gray * 0.8).astype(np.uint8)])
    cv2.rectangle(image, (width // 2 - 40, height // 3), (width // 2 + 40, height - 40),
                  (40, 40, 220), 3)
    cv2.putText(image, "watcher test-action", (16, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                (255, 255, 255), 2, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise RuntimeError("cannot encode the sample snapshot")
    return buf.tobytes()


def sample_event(config: WatcherConfig, action: str, *, resolved: bool = False,
                 now_ms: int | None = None) -> AlertEventRecord:
    """A sample event as ``action`` would get it from the first rule naming it."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    rule = next((r for r in config.rules if action in r.actions), None)
    name = rule.name if rule is not None else SAMPLE_RULE
    streams = rule.stream_names if rule is not None else (
        config.stream_names[:1] or [SAMPLE_STREAM])
    stream_key = "+".join(streams)
    kind = Kind.RESOLVED if resolved else Kind.FIRING
    started_ms = now_ms - 60_000 if resolved else now_ms
    return AlertEventRecord(
        event_key=f"{name}:{stream_key}:1:{kind}:{now_ms}:test-{uuid.uuid4().hex[:8]}",
        rule=name, stream_key=stream_key, episode=1, kind=kind, notify=True,
        created_ms=now_ms,
        severity=rule.severity if rule is not None else "warning",
        labels={**(rule.labels if rule is not None else {}), "test": "true"},
        answer={"person_present": not resolved, "people": 0 if resolved else 2,
                "description": "Test alert from `watcher test-action`: two people at the "
                "loading dock (sample data, no camera was asked)."},
        urls=tuple(f"ovs://streams/{s}?frame_index=0" for s in streams),
        stream_ids=tuple(f"test-{s}" for s in streams),
        stream_time_ms=123_456,
        model=config.overshoot.model,
        usage={"prompt_tokens": 812, "completion_tokens": 24},
        snapshot=None if resolved else sample_snapshot(),
        snapshot_type=None if resolved else "image/jpeg",
        extra={"prompt": rule.prompt if rule is not None else "Is anyone at the loading dock?",
               "streams": streams, "started_ms": started_ms, "test": True},
    )


async def send_test_alert(config: WatcherConfig, name: str, *, resolved: bool = False,
                          out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Deliver a sample event through action ``name``: 0 sent, 1 failed, 2 no such action."""
    out = out or sys.stdout
    err = err or sys.stderr
    options = config.actions.get(name)
    if options is None:
        known = list(config.actions)
        hint = did_you_mean(name, known) if known else " (no actions are configured)"
        print(f"no action named {name!r}{hint}", file=err)
        return 2
    event = sample_event(config, name, resolved=resolved)
    key = f"test-action:{name}:{uuid.uuid4().hex}"
    async with httpx.AsyncClient() as http:
        action = build_action(name, options, http=http)
        try:
            await action.send(event, key)
        except DeliveryError as exc:
            kind = "permanent" if exc.permanent else "temporary, the outbox would retry"
            print(redact(f"{name}: delivery failed ({kind}): {exc}"), file=err)
            return 1
        finally:
            await action.aclose()
    print(f"{name}: sent a sample {event.status} alert ({options.type}, rule {event.rule}, "
          f"stream {event.stream_key}, Idempotency-Key {key})", file=out)
    return 0
