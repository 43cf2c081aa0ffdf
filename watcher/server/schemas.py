"""Request bodies the embedded server accepts, as pydantic models.

Chat bodies are permissive like the API's: unknown fields are accepted and
ignored (or passed to an upstream backend unchanged).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# Printable ASCII only: a URL's non-ASCII characters are percent-encoded. A host is a name
# or an address, IPv6 in brackets; never empty.
_USERINFO = r"([\x21\x22\x24-\x2e\x30-\x3e\x41-\x5a\x5c\x5e-\x7e]*@)?"
_HOST = (r"(\[[0-9A-Fa-f:.]+\]|[\x21\x22\x24-\x2e\x30-\x39\x3b-\x3e\x41-\x5a\x5c\x5e-\x7e]+)"
         r"(:[0-9]*)?")
_REST = r"([/?#][\x21-\x7e]*)?$"
RTSP_URL = rf"^[Rr][Tt][Ss][Pp][Ss]?://{_USERINFO}{_HOST}{_REST}"
"""An rtsp:// or rtsps:// URL with a host (any case of scheme; credentials allowed)."""
HTTP_URL = rf"^[Hh][Tt][Tt][Pp][Ss]?://{_USERINFO}{_HOST}{_REST}"
"""An http:// or https:// URL with a host: an HLS playlist or a progressive stream."""


URL_PATTERNS = {"rtsp": (RTSP_URL, "rtsp:// or rtsps://"), "hls": (HTTP_URL, "http:// or https://")}


def _per_type_url_patterns(schema: dict[str, Any]) -> None:
    """Publish which pattern ``url`` must match for each ``type``."""
    schema["oneOf"] = [
        {"properties": {"type": {"const": kind},
                        "url": {"pattern": pattern, "description": f"An {expected} URL"}}}
        for kind, (pattern, expected) in URL_PATTERNS.items()
    ]


class SourceBody(BaseModel):
    """A camera the server pulls itself; ``url`` must match the pattern of its ``type``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_per_type_url_patterns)
    type: Literal["rtsp", "hls"]
    url: str = Field(min_length=1, max_length=4096,
                     description="The camera's URL; may carry credentials, never echoed back")

    @field_validator("url")
    @classmethod
    def _url_of_its_type(cls, url: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        if kind in URL_PATTERNS:
            pattern, expected = URL_PATTERNS[kind]
            if not re.fullmatch(pattern, url):  # fullmatch: "$" alone allows a final newline
                raise ValueError(f"a {kind} source needs an {expected} url")
        return url


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
