"""The ``status:`` section: where the daemon serves /healthz, /readyz, /metrics and /status.

::

    status:
      enabled: true          # default: on when port or host is set, else off
      host: 127.0.0.1        # 0.0.0.0 for Prometheus in another container (no auth!)
      port: 9464
      max_frame_age: 2s      # /readyz: a stream whose newest frame is older is not ready
                             # (default: 5 frame intervals, at least 2 s)

The model follows :class:`watcher.config.Section` (``extra="forbid"``, every
option described) without importing it, so that :mod:`watcher.config` can
import this module at its top without an import cycle.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watcher.duration import Duration

DEFAULT_PORT = 9464
"""The conventional Prometheus-exporter range (9100-9999); change it with ``status.port``."""


class StatusConfig(BaseModel):
    """The daemon's status listener (health checks, Prometheus metrics, ``watcher status``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Serve /healthz, /readyz, /metrics and /status while `watcher run` "
        "runs (needed by `watcher status`); default: on when `port` or `host` is given.")
    host: str = Field(
        "127.0.0.1", min_length=1, description="Address to listen on; 0.0.0.0 (or ::) lets "
        "other hosts and containers scrape it. There is no authentication: listen only where "
        "the network is trusted.")
    port: int = Field(
        DEFAULT_PORT, ge=0, le=65535, description="Port to listen on (0 picks a free one, "
        "logged at start).")
    max_frame_age: Duration | None = Field(
        None, gt=0, description="/readyz reports a stream not ready when the API's newest "
        "frame of it is older than this; unset: a few frame intervals (5 / fps, at least 2 s).")

    @model_validator(mode="before")
    @classmethod
    def _on_when_an_address_is_given(cls, data: object) -> object:
        """``status: {port: 9464}`` means the listener is wanted, unless ``enabled: false``."""
        if isinstance(data, dict) and "enabled" not in data and ("port" in data
                                                                 or "host" in data):
            return {**data, "enabled": True}
        return data

    @field_validator("host")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip().removeprefix("[").removesuffix("]")
        if not value:
            raise ValueError("is empty: give an address such as 127.0.0.1 or 0.0.0.0")
        return value

    @property
    def client_host(self) -> str:
        """Where a local client reaches the listener (a wildcard address means this host)."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)

    @property
    def url(self) -> str:
        """The listener's base URL as a local client uses it."""
        host = self.client_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
