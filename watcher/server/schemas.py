"""Request bodies the embedded server accepts, as pydantic models.

Chat bodies are permissive like the API's: unknown fields are accepted and
ignored (or passed to an upstream backend unchanged).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["rtsp", "hls"]
    url: str = Field(min_length=1, max_length=4096)


class CreateStreamBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    source: SourceBody | None = None


class UrlRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = Field(max_length=16 * 1024 * 1024)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ImageUrlPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["image_url"]
    image_url: UrlRef


class VideoUrlPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["video_url"]
    video_url: UrlRef


ContentPart = Annotated[TextPart | ImageUrlPart | VideoUrlPart, Field(discriminator="type")]


class ChatMessageBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageBody] = Field(min_length=1, max_length=256)
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
