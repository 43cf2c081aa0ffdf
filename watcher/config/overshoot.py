"""The ``overshoot:`` section: where the API is, its key and default model, and the
options of the embedded server (``overshoot.embedded``) with model prices and budgets."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from watcher.configbase import Section
from watcher.duration import Duration
from watcher.engine.budget import BudgetConfig
from watcher.server.backends.upstream import UpstreamSettings
from watcher.server.settings import ServerSettings

EMBEDDED = "embedded"
"""``overshoot.base_url`` value meaning: run the embedded server in-process."""
DEFAULT_MODEL = "local/vision"


class EmbeddedServerConfig(Section):
    """Options of the Overshoot-compatible server started in-process (`base_url: embedded`)."""

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(0, ge=0, le=65535, description="Port to listen on; 0 picks a free one.")
    ttl_seconds: Duration = Field(45.0, ge=1, description="Lease length a keepalive renews to.")
    retention_seconds: Duration = Field(600.0, ge=1, description="How long frames are retained.")
    tombstone_seconds: Duration = Field(
        300.0, ge=0, description="How long an ended stream stays readable before it is a 404.")
    max_mb_per_stream: float = Field(
        40.0, gt=0, description="Memory cap for one stream's retained frames, in MB.")
    jpeg_quality: int = Field(
        80, ge=10, le=100, description="Highest JPEG quality frames are retained at.")
    max_stored_fps: float | None = Field(
        5.0, ge=0, allow_inf_nan=False, description="Most frames per second stored per "
        "stream, whatever the camera sends; windows can't be sampled faster. 0 or null: "
        "store every frame.")
    public_url: str | None = Field(
        None, description="Base URL publishers reach the server at (default: the one it "
        "listens on).")
    enable_vision: bool = Field(True, description="Serve the local/vision model.")
    forward_media_urls: bool = Field(
        False, description="Send http(s) image_url/video_url parts to upstream models as "
        "given (off: refused with a 400).")
    allow_private_sources: bool = Field(
        True, description="Let `pull: true` cameras live on loopback, private and link-local "
        "addresses (cameras are on private networks); false refuses them, as `watcher serve` "
        "does by default.")
    pull_connect_timeout_seconds: Duration = Field(
        15.0, gt=0, le=600, description="How long creating a pulled stream waits for the "
        "camera's first frame before it fails (the keeper then retries with backoff).")
    max_streams_per_key: int = Field(
        64, ge=1, description="Most active streams one API key may hold.")
    max_pulls: int = Field(16, ge=0, description="Most cameras the server pulls at once.")
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list,
        description="OpenAI-compatible servers (Ollama, vLLM, ...) whose models the embedded "
        "server lists: {base_url, api_key, models: {listed-name: upstream-name}, ...}.")

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is not None:
            _check_http_url(value)
        return value

    def server_settings(self, api_keys: list[str]) -> ServerSettings:
        """The embedded server's settings, accepting ``api_keys``."""
        return ServerSettings(
            api_keys=api_keys,
            ttl_seconds=math.ceil(self.ttl_seconds),
            retention_seconds=math.ceil(self.retention_seconds),
            tombstone_seconds=math.ceil(self.tombstone_seconds),
            max_mb_per_stream=self.max_mb_per_stream,
            jpeg_quality=self.jpeg_quality,
            max_stored_fps=self.max_stored_fps,
            public_url=self.public_url,
            upstreams=self.upstreams,
            enable_vision=self.enable_vision,
            forward_media_urls=self.forward_media_urls,
            allow_private_sources=self.allow_private_sources,
            pull_connect_timeout_seconds=self.pull_connect_timeout_seconds,
            max_streams_per_key=self.max_streams_per_key,
            max_pulls=self.max_pulls,
        )


def _check_http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (check the host and port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (use api_key)")
    return value.rstrip("/")


class ModelPrice(Section):
    """What one model costs, for cost estimates (`watcher backtest`)."""

    input_per_mtok: float = Field(0.0, ge=0, description="Price of a million prompt tokens.")
    output_per_mtok: float = Field(0.0, ge=0,
                                   description="Price of a million completion tokens.")
    per_call: float = Field(0.0, ge=0, description="Price of one call, on top of tokens.")


class OvershootConfig(Section):
    """Where the Overshoot API is and how to talk to it."""

    base_url: str = Field(
        EMBEDDED, description="`embedded` runs an Overshoot-compatible server in-process (on "
        "a free port, with a random key); otherwise the API's URL, e.g. "
        "https://api.overshoot.ai/v1beta.")
    api_key: SecretStr | None = Field(
        None, validate_default=True, description="API key (ovs-...); required unless base_url "
        "is embedded, where it is the key the embedded server accepts (default: random).")
    model: str = Field(DEFAULT_MODEL, min_length=1,
                       description="Model rules use when they do not name one.")
    timeout_seconds: Duration = Field(
        30.0, gt=0, description="Deadline of one chat completion request; stream calls "
        "(create 15 s, keepalive and reads 10 s) keep their shorter deadlines unless this "
        "is shorter still.")
    embedded: EmbeddedServerConfig = Field(
        default_factory=EmbeddedServerConfig,
        description="Options of the embedded server; ignored unless base_url is embedded.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Per model: {input_per_mtok, output_per_mtok, "
        "per_call}, for the cost estimates of `watcher backtest`.")
    budgets: dict[str, BudgetConfig] = Field(
        default_factory=dict, description="Per model: caps on calls or tokens per UTC hour "
        "and day ({calls_per_hour, calls_per_day, tokens_per_hour, tokens_per_day, notify}), "
        "shared by every rule asking it; once spent, rules that ask it first are skipped "
        "until the window rolls.")

    @field_validator("base_url")
    @classmethod
    def _embedded_or_http(cls, value: str) -> str:
        value = value.strip()
        return value if value == EMBEDDED else _check_http_url(value)

    @field_validator("api_key")
    @classmethod
    def _key_for_remote_api(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        remote = info.data.get("base_url", EMBEDDED) != EMBEDDED
        if value is not None and not value.get_secret_value().strip():
            if remote:
                raise ValueError("is empty (is its environment variable set?)")
            return None
        if value is None and remote:
            raise ValueError("required when base_url is not `embedded`; "
                             "e.g. api_key: ${OVERSHOOT_API_KEY}")
        return value

    @property
    def is_embedded(self) -> bool:
        return self.base_url == EMBEDDED

