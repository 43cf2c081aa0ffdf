"""Where an upstream OpenAI-compatible server is and which of its models are listed."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class UpstreamSettings(BaseModel):
    """Where the upstream is and which of its models the embedded server lists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    """OpenAI-compatible root, e.g. ``http://127.0.0.1:11434/v1`` (Ollama)."""
    api_key: SecretStr | None = None
    models: dict[str, str] = Field(default_factory=dict)
    """Name listed by the embedded server -> model name upstream."""
    timeout_seconds: float = Field(default=60.0, gt=0)
    """Deadline for one whole completion (connect + generation + body)."""
    max_body_bytes: int = Field(default=2048, ge=0)
    """At most this much of an upstream error body is echoed to the client."""
    owned_by: str = "upstream"
    frame_labels: bool = True
    jpeg_passthrough: bool = True
    """Send retained JPEGs as stored; when off, re-encode them (see the two below)."""
    max_frame_side: int | None = Field(default=None, gt=0)
    """With ``jpeg_passthrough`` off: downscale frames whose longer side exceeds this."""
    jpeg_quality: int = Field(default=85, ge=1, le=100)
    """With ``jpeg_passthrough`` off: quality of the re-encoded JPEGs."""
    probe: bool = False
    """Report status from a cached ``GET {base_url}/models`` instead of always ready."""
    probe_timeout_seconds: float = Field(default=2.0, gt=0)
    probe_ttl_seconds: float = Field(default=30.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            raise ValueError("base_url is not a valid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an http(s) URL with a host")
        if url.userinfo:
            raise ValueError("base_url must not carry credentials; use api_key")
        return value.rstrip("/")

    @property
    def provider(self) -> str:
        """The upstream host, as reported in ``upstream.provider`` of errors."""
        return httpx.URL(self.base_url).host
