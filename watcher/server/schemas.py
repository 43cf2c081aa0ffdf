"""Request bodies the embedded server accepts, as pydantic models.

Chat bodies are permissive like the API's: unknown fields are accepted and
ignored (or passed to an upstream backend unchanged).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Printable ASCII only: a URL's non-ASCII characters are percent-encoded. No brackets (so no
# IPv6 literals) and no empty host, so that every url matching is one the puller can open.
_USERINFO = r"([\x21\x22\x24-\x2e\x30-\x3e\x41-\x5a\x5c\x5e-\x7e]*@)?"
_HOST = r"[\x21\x22\x24-\x2e\x30-\x39\x3b-\x3e\x41-\x5a\x5c\x5e-\x7e]+(:[0-9]*)?"
_REST = r"([/?#][\x21-\x7e]*)?$"
RTSP_URL = rf"^[Rr][Tt][Ss][Pp][Ss]?://{_USERINFO}{_HOST}{_REST}"
"""An rtsp:// or rtsps:// URL with a host (any case of scheme; credentials allowed)."""
HTTP_URL = rf"^[Hh][Tt][Tt][Pp][Ss]?://{_USERINFO}{_HOST}{_REST}"
"""An http:// or https:// URL with a host: an HLS playlist or a progressive stream."""


def _url_field(pattern: str, what: str) -> Any:
    # The pattern is checked by a validator (for a readable message) and published as is.
    return Field(min_length=1, max_length=4096, description=f"The camera's {what} URL; "
                 "may carry credentials, never echoed back", json_schema_extra={
                     "pattern": pattern})


def _check_url(url: str, pattern: str, expected: str) -> str:
    if not re.fullmatch(pattern, url):  # fullmatch: "$" alone would allow a final newline
        raise ValueError(f"needs an {expected} url")
    return url


class RtspSourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["rtsp"]
    url: str = _url_field(RTSP_URL, "rtsp:// or rtsps://")

    @field_validator("url")
    @classmethod
    def _rtsp_url(cls, url: str) -> str:
        return _check_url(url, RTSP_URL, "rtsp:// or rtsps://")


class HlsSourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["hls"]
    url: str = _url_field(HTTP_URL, "http:// or https://")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _check_url(url, HTTP_URL, "http:// or https://")


SourceBody = Annotated[RtspSourceBody | HlsSourceBody, Field(discriminator="type")]


class CreateStreamBody(BaseModel):
    """Unknown top-level fields are ignored; a ``source`` takes exactly its two fields."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})
    source: SourceBody | None = Field(
        None, description="A camera for the server to pull itself (then `publish` is null)")


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
