"""Requests and responses of the Overshoot API as pydantic models.

Response models ignore unknown fields and keep open vocabularies (model
``status``, ``end_reason``, ``publish.type``) as plain strings, so a newer
server never breaks an older client. Request models forbid typos, except
:class:`ChatRequest`, which passes unknown options (``tools``, ``thread_id``)
through like the API does.

Secrets never show in a repr: the publish token and a pulled source's URL
(which may carry camera credentials) are ``repr=False``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MODEL_READY = "ready"


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- models -------------------------------------------------------------------
class Model(_Response):
    """One entry of ``GET /models``; ``status`` is ``ready``, ``loading`` or ``unavailable``."""

    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    status: str = MODEL_READY

    @property
    def ready(self) -> bool:
        return self.status == MODEL_READY


class ModelList(_Response):
    object: str = "list"
    data: list[Model] = Field(default_factory=list)

    def ready_ids(self) -> list[str]:
        """Ids of the models that may be used right now (only ``ready`` ones should be)."""
        return [m.id for m in self.data if m.ready]


# -- streams ------------------------------------------------------------------
class StreamSource(_Request):
    """A camera the server pulls itself instead of waiting for a publisher."""

    type: Literal["rtsp", "hls"]
    url: str = Field(min_length=1, repr=False)


class CreateStreamRequest(_Request):
    source: StreamSource | None = None


class Publish(_Response):
    """Where and how to publish video: ``whip`` (embedded server) or ``livekit`` (cloud)."""

    type: str
    url: str
    token: str = Field(repr=False)


class StreamCreated(_Response):
    id: str
    state: Literal["active", "ended"] = "active"
    publish: Publish | None = None
    source: dict[str, Any] | None = None
    """Server-pulled sources: ``{"type": ...}`` echoed back (never the url)."""
    expires_at_ms: int
    ttl_seconds: float


class StreamStatus(_Response):
    """``GET /streams/{id}``. Frame fields stay None until the first frame arrived."""

    id: str | None = None
    state: Literal["active", "ended"]
    stream_time_ms: int | None = None
    first_frame_at_ms: int | None = None
    last_frame_at_ms: int | None = None
    last_frame_index: int | None = None
    first_available_frame_at_ms: int | None = None
    first_available_frame_index: int | None = None
    created_at_ms: int | None = None
    recent_fps: float | None = None
    """Frames *stored* per second lately: the rate ``frame_index`` advances at."""
    received_fps: float | None = None
    """(watcher's server) Frames per second the publisher sent, before ``max_stored_fps``."""
    retained_frame_count: int | None = None
    evicted_frame_count: int | None = None
    expires_at_ms: int | None = None
    ttl_seconds: float | None = None
    ended_at_ms: int | None = None
    end_reason: str | None = None
    """``expired``, ``deleted`` or ``reaped`` once the stream has ended."""
    audio: bool | None = None
    last_pull: int | None = None
    """Server-pulled sources: when the server last pulled a frame, in ms."""
    pull: dict[str, Any] | None = None
    """The embedded server's extension for pulled sources: state, counters, last error."""
    source: dict[str, Any] | None = None
    """Server-pulled sources: ``{"type": "rtsp"|"hls"}`` (never the url)."""

    @property
    def active(self) -> bool:
        return self.state == "active"

    @property
    def has_frames(self) -> bool:
        return self.last_frame_at_ms is not None


class StreamList(_Response):
    """``GET /streams``: an extension of the embedded server (not in the cloud API)."""

    object: str = "list"
    data: list[StreamStatus] = Field(default_factory=list)


class Keepalive(_Response):
    """A renewed lease; ``publish`` carries a fresh token for a reconnecting publisher."""

    id: str
    expires_at_ms: int
    ttl_seconds: float
    stream_time_ms: int | None = None
    publish: Publish | None = None


class Deleted(_Response):
    id: str
    deleted: bool = True


# -- chat ---------------------------------------------------------------------
class UrlRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"] = "text"
    text: str


class ImageUrlPart(BaseModel):
    """One frame: an ``ovs://`` reference (see ``refs.frame_url``), ``data:`` or ``https:``."""

    model_config = ConfigDict(extra="allow")
    type: Literal["image_url"] = "image_url"
    image_url: UrlRef

    @classmethod
    def of(cls, url: str) -> ImageUrlPart:
        return cls(image_url=UrlRef(url=url))


class VideoUrlPart(BaseModel):
    """A window of frames: an ``ovs://`` reference (see ``refs.window_url``)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["video_url"] = "video_url"
    video_url: UrlRef

    @classmethod
    def of(cls, url: str) -> VideoUrlPart:
        return cls(video_url=UrlRef(url=url))


ContentPart = Annotated[TextPart | ImageUrlPart | VideoUrlPart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None

    @classmethod
    def user(cls, *parts: str | TextPart | ImageUrlPart | VideoUrlPart) -> ChatMessage:
        """A user message; plain strings become text parts."""
        return cls(role="user",
                   content=[TextPart(text=p) if isinstance(p, str) else p for p in parts])

    @classmethod
    def system(cls, text: str) -> ChatMessage:
        return cls(role="system", content=text)


class ChatRequest(BaseModel):
    """An OpenAI-compatible chat request; unknown options are sent as given.

    Serialise with ``model_dump(exclude_none=True)``, as the client does, so
    unset options are left to the server's defaults.
    """

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None


class AssistantMessage(_Response):
    role: str = "assistant"
    content: str | None = None


class Choice(_Response):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None


class Usage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(_Response):
    id: str
    object: str = "chat.completion"
    created: int | None = None
    model: str
    choices: list[Choice] = Field(default_factory=list)
    usage: Usage | None = None

    @property
    def text(self) -> str:
        """The first choice's content ('' when the model said nothing)."""
        if not self.choices:
            return ""
        return self.choices[0].message.content or ""
