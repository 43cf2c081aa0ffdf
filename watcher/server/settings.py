"""Settings of the embedded server (from ``watcher serve`` flags or the daemon's config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from watcher.server.backends.upstream import UpstreamSettings
from watcher.server.cors import normalize_origin
from watcher.server.streams import StreamSettings


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_keys: list[SecretStr] = Field(
        default_factory=list, description="API keys accepted as `Authorization: Bearer`.")
    ttl_seconds: int = Field(45, ge=1, description="Lease length a keepalive renews to.")
    retention_seconds: int = Field(600, ge=1, description="How long frames are retained.")
    tombstone_seconds: int = Field(
        300, ge=0, description="How long an ended stream stays readable before it is a 404.")
    max_mb_per_stream: float = Field(
        40, gt=0, description="Memory cap for one stream's retained frames, in MB; JPEG "
        "quality adapts so that a full retention period fits.")
    jpeg_quality: int = Field(
        80, ge=10, le=100, description="Highest JPEG quality frames are retained at.")
    max_stored_fps: float | None = Field(
        5, ge=0, allow_inf_nan=False, description="Most frames per second stored per stream, "
        "whatever the publisher sends (frames in between are skipped before encoding); "
        "windows can't be sampled faster than this. 0 or null: store every frame.")
    public_url: str | None = Field(
        None, description="Base URL publishers reach this server at (default: the request's).")
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list, description="OpenAI-compatible servers whose models are listed.")
    enable_vision: bool = Field(True, description="Serve the local/vision model.")
    forward_media_urls: bool = Field(
        False, description="Send http(s) image_url/video_url parts to upstream models as "
        "given. Off by default: the upstream would fetch any address a caller names.")
    allow_private_sources: bool = Field(
        False, description="Let pull sources (POST /streams with a source) name loopback, "
        "private, link-local and metadata addresses. Off by default: the server would "
        "connect wherever a caller points it. The daemon's embedded server turns it on.")
    pull_connect_timeout_seconds: float = Field(
        15.0, gt=0, le=600, description="How long POST /streams with a source waits for the "
        "camera's first frame before failing with 422 `Could not connect to source url`.")
    max_streams_per_key: int = Field(
        64, ge=1, description="Most active streams one API key may hold; one more is a 429.")
    max_pulls: int = Field(
        16, ge=0, description="Most cameras the server pulls at once, over all keys; one more "
        "is a 429. 0: refuse pull sources.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins whose web pages may call the API and "
        "publish over WHIP (CORS), as scheme://host[:port]; `*` allows any.")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(normalize_origin(v) for v in values))

    def stream_settings(self) -> StreamSettings:
        return StreamSettings(
            ttl_seconds=self.ttl_seconds,
            retention_seconds=self.retention_seconds,
            tombstone_seconds=self.tombstone_seconds,
            max_bytes_per_stream=int(self.max_mb_per_stream * 1_000_000),
            max_stored_fps=self.max_stored_fps or None,
        )
