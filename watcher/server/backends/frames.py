"""``local/frames``: a diagnostic model that answers what each media part resolved to."""

from __future__ import annotations

import json

from watcher.server.backends.base import (
    ChatInput,
    Completion,
    ExternalImage,
    ExternalVideo,
    ModelBackend,
    estimate_usage,
)
from watcher.server.problems import ChatProblem


class FramesModel(ModelBackend):
    """Answers ``{"parts": [{"type", "stream_id", "frames": [{"frame_index", "timestamp_ms"}]}]}``.

    One entry per image_url/video_url part in request order, frames oldest
    first; a text-only request answers ``{"parts": []}``.
    """

    id = "local/frames"

    async def complete(self, request: ChatInput) -> Completion:
        for message in request.messages:
            for part in message.parts:
                if isinstance(part, ExternalImage | ExternalVideo):
                    kind = "image_url" if isinstance(part, ExternalImage) else "video_url"
                    raise ChatProblem(
                        400, f"local/frames describes only ovs:// references; a {kind} that "
                        "is a data: or http(s) URL has no stream frames to describe",
                        type="validation_error", code=f"{kind}_unsupported")
        parts = [
            {
                "type": media.part_type,
                "stream_id": media.stream_id,
                "frames": [
                    {"frame_index": f.index, "timestamp_ms": f.timestamp_ms} for f in media.frames
                ],
            }
            for media in request.media
        ]
        content = json.dumps({"parts": parts}, separators=(",", ":"))
        return Completion(content=content, usage=estimate_usage(request, content))
