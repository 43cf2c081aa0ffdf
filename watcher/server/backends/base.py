"""What a model backend is: something that answers a chat whose media parts are resolved.

The server parses the request, resolves every ovs:// part to retained frames
and hands the backend a :class:`ChatInput`. A backend answers a
:class:`Completion` or raises :class:`~watcher.server.problems.ChatProblem`
with the error envelope the client should see.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from watcher.server.resolve import ResolvedMedia

ModelStatus = Literal["ready", "loading", "unavailable"]

TOKENS_PER_FRAME = 200
"""Visual tokens counted per frame by the local models (about a 480p frame for Qwen)."""


@dataclass(frozen=True, slots=True)
class ExternalImage:
    """An image part whose URL is not an ovs:// reference (``data:`` or ``https:``)."""

    url: str


@dataclass(frozen=True, slots=True)
class ExternalVideo:
    """A video part whose URL is not an ovs:// reference (``data:`` or ``https:``)."""

    url: str


Part = str | ResolvedMedia | ExternalImage | ExternalVideo
"""A content part: text, resolved stream frames, or an external image or video URL."""


@dataclass(slots=True)
class Message:
    role: str
    parts: list[Part]

    @property
    def text(self) -> str:
        return "\n".join(p for p in self.parts if isinstance(p, str))


@dataclass(slots=True)
class ChatInput:
    model: str
    messages: list[Message]
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    """The request body as received, for backends that pass options through."""

    @property
    def media(self) -> list[ResolvedMedia]:
        """Every resolved media part, in request order."""
        return [p for m in self.messages for p in m.parts if isinstance(p, ResolvedMedia)]

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.text for m in self.messages if m.text)

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema asked for by ``response_format``, if any."""
        rf = self.response_format or {}
        if rf.get("type") != "json_schema":
            return None
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else {}


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Completion:
    content: str
    usage: Usage
    finish_reason: str = "stop"


def estimate_usage(request: ChatInput, content: str) -> Usage:
    """Token counts for local models: ~4 characters a token, a fixed cost per frame."""
    frames = sum(len(m.frames) for m in request.media)
    return Usage(
        prompt_tokens=math.ceil(len(request.prompt_text) / 4) + frames * TOKENS_PER_FRAME,
        completion_tokens=max(1, math.ceil(len(content) / 4)),
    )


class ModelBackend(ABC):
    """One model listed by ``GET /models``."""

    id: str
    owned_by: str = "watcher"
    supports_video: bool = True
    fetches_urls: bool = False
    """Whether the model can be sent http(s) image/video URLs to fetch itself (upstreams)."""

    async def status(self) -> ModelStatus:
        return "ready"

    @abstractmethod
    async def complete(self, request: ChatInput) -> Completion:
        """Answer the chat, or raise ChatProblem."""

    async def stream(self, request: ChatInput) -> AsyncIterator[str | Usage]:
        """Yield the answer in pieces (SSE), then optionally its :class:`Usage`.

        By default the whole answer at once, then its usage.
        """
        completion = await self.complete(request)
        yield completion.content
        yield completion.usage

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and models."""
