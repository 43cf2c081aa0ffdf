"""What goes to an upstream and what comes back: message parts and answer fields.

Resolved ovs:// frames become base64 JPEG data URLs (a video part is its
frames in order, each after a ``[stream ... frame N at t=...]`` label when
``frame_labels`` is on); non-ovs image/video URLs are passed as given. From an
answer, the text of a message or delta and its token usage are read.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from watcher.server.backends.base import ExternalImage, ExternalVideo, Message, Usage
from watcher.server.frames import StoredFrame
from watcher.server.resolve import ResolvedMedia


def frame_label(stream_id: str, frame: StoredFrame) -> str:
    return f"[stream {stream_id} frame {frame.index} at t={frame.timestamp_ms / 1000:.3f}s]"


def message_body(
    message: Message, labels: bool, jpegs: Mapping[tuple[str, int], bytes],
) -> dict[str, Any]:
    if all(isinstance(p, str) for p in message.parts):
        return {"role": message.role, "content": "\n".join(message.parts)}  # type: ignore[arg-type]
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
        elif isinstance(part, ExternalImage):
            content.append({"type": "image_url", "image_url": {"url": part.url}})
        elif isinstance(part, ExternalVideo):
            content.append({"type": "video_url", "video_url": {"url": part.url}})
        elif isinstance(part, ResolvedMedia):
            video = part.part_type == "video_url"
            for frame in part.frames:
                if video and labels:
                    content.append({"type": "text", "text": frame_label(part.stream_id, frame)})
                jpeg = jpegs.get((part.stream_id, frame.index), frame.jpeg)
                content.append({"type": "image_url", "image_url": {"url": data_url(jpeg)}})
    return {"role": message.role, "content": content}


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def reencode_all(frames: list[StoredFrame], max_side: int | None, quality: int) -> list[bytes]:
    import cv2
    import numpy as np

    out: list[bytes] = []
    for frame in frames:
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            out.append(frame.jpeg)  # undecodable: send as stored rather than drop it
            continue
        height, width = image.shape[:2]
        if max_side is not None and max(height, width) > max_side:
            scale = max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(buf.tobytes() if ok else frame.jpeg)
    return out


def content_text(content: Any) -> str | None:
    """Message content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p["text"] for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        return "".join(texts) if texts else None
    return None


def usage_of(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)
