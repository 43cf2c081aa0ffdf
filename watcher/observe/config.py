"""The ``status:`` section: where the daemon serves /healthz, /readyz, /metrics and /status.

::

    status:
      enabled: true          # default: on when port or host is set, else off
      host: 127.0.0.1        # 0.0.0.0 for Prometheus in another container (no auth!)
      port: 9464
      max_frame_age: 2s      # /readyz: a stream whose newest frame is older is not ready
                             # (default: 5 frame intervals, at least 2 s)
      token: ${WATCHER_CONSOLE_TOKEN}   # required by the console, API and /metrics
      public_url: https://watcher.example.com   # where people open the console (links)

The model follows :class:`watcher.configbase.Section` (``extra="forbid"``, every
option described) without importing it, so that :mod:`watcher.config` can
import this module at its top without an import cycle.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

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
        "other hosts and containers reach it, which needs `token`: without one the listener "
        "binds to loopback only.")
    port: int = Field(
        DEFAULT_PORT, ge=0, le=65535, description="Port to listen on (0 picks a free one, "
        "logged at start).")
    max_frame_age: Duration | None = Field(
        None, gt=0, description="/readyz reports a stream not ready when the API's newest "
        "frame of it is older than this; unset: a few frame intervals (5 / fps, at least 2 s).")
    token: SecretStr | None = Field(
        None, description="Secret that the console, the /api/ routes, /status and /metrics "
        "require: `Authorization: Bearer <token>` from scripts, a login form (HttpOnly "
        "cookie) in browsers. Without it the listener binds to loopback only. /healthz "
        "stays open.")
    public_url: str | None = Field(
        None, description="The console's address as people open it (behind a proxy, say "
        "https://watcher.example.com); webhook, Slack and email messages then link to the "
        "event's page.")

    @field_validator("token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 8:
            raise ValueError("is shorter than 8 characters: use a long random string "
                             "(for example `openssl rand -hex 24`)")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL such as "
                             "https://watcher.example.com")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not hold credentials, a query or a fragment")
        return value

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
    def loopback_only(self) -> bool:
        """Whether ``host`` is a loopback address (or name)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def bind_host(self) -> str:
        """Where to listen: ``host``, or 127.0.0.1 when ``host`` is not loopback and no
        token protects the listener."""
        return self.host if self.token is not None or self.loopback_only else "127.0.0.1"

    @property
    def client_host(self) -> str:
        """Where a local client reaches the listener (a wildcard address means this host)."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)

    @property
    def url(self) -> str:
        """The listener's base URL as a local client uses it."""
        host = self.client_host if self.token is not None or self.loopback_only else "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
