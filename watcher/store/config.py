"""The ``state:`` config section: where alert state and the outbox live.

::

    state:
      path: watcher-state.sqlite3          # SQLite (the default), relative to the config
      # url: postgresql://watcher:${PGPASSWORD}@db.example:5432/watcher   # or PostgreSQL
      keep_events_for: 30d                 # events and their snapshots, then pruned
      evidence_budget_mb: 500              # snapshots (and clips) kept; oldest dropped first
      max_pending_steps: 1000              # alert steps kept in memory while the store fails
      max_pending_age: 1m                  # then their notifications go out best effort

``url`` takes a ``postgresql://`` URL (or ``sqlite:///file``) and wins over
``path``; its password is a secret: kept in a SecretStr, registered with the
log redactor, and never shown (:attr:`StateConfig.shown`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from watcher.configbase import BASE_DIR, Section
from watcher.duration import Duration
from watcher.logs import register_secret
from watcher.store.database import MEMORY, parse_location, shown

DEFAULT_STATE_PATH = "watcher-state.sqlite3"
PositiveDuration = Annotated[Duration, Field(gt=0)]


class StateConfig(Section):
    """Where the daemon keeps alert state and the delivery outbox across restarts."""

    path: str = Field(
        DEFAULT_STATE_PATH, validate_default=True, description="SQLite file, relative to the "
        "config file's directory (`:memory:` keeps state only while running). One daemon "
        "per file.")
    url: SecretStr | None = Field(
        None, description="A database URL instead of `path`: "
        "`postgresql://user:password@host:5432/database` (several instances may share it), "
        "or `sqlite:///file`. `${VAR}` works here; the password is never logged.")
    keep_events_for: PositiveDuration = Field(
        30 * 86400.0, description="Alert events (with their snapshots) older than this are "
        "pruned, once none of their deliveries is still pending.")
    evidence_budget_mb: float = Field(
        500.0, gt=0, description="Most megabytes of evidence (event snapshots, clips) the "
        "state store keeps; past it, or when the disk is full, the oldest evidence is "
        "dropped first (the alert records stay).")
    max_pending_steps: int = Field(
        1000, ge=1, description="Alert steps kept in memory while the state store fails; "
        "past it the oldest are notified best effort and lose their evidence in memory.")
    max_pending_age: Duration = Field(
        60.0, ge=0, description="How long a notification may wait for an unavailable state "
        "store before it is delivered best effort (marked `persisted: false`); it is "
        "recorded once the store is back.")

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is empty: give a file name such as watcher-state.sqlite3")
        if value == MEMORY:
            return value
        if "\x00" in value:
            raise ValueError("is not a usable file name")
        return _resolve(value, info)

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: SecretStr | None, info: ValidationInfo
                      ) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if "://" not in text:
            raise ValueError("is not a database URL (expected "
                             "postgresql://user:password@host:5432/database); "
                             "for a SQLite file use `path`")
        url = parse_location(text)  # ValueError messages never hold the password
        if url.password:
            register_secret(str(url.password))
        if url.get_backend_name() == "sqlite" and url.database != MEMORY:
            assert url.database is not None
            text = f"sqlite:///{_resolve(url.database, info)}"
        return SecretStr(text)

    @model_validator(mode="after")
    def _not_both(self) -> StateConfig:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError("set `path` (SQLite) or `url`, not both")
        return self

    @property
    def evidence_budget_bytes(self) -> int:
        return round(self.evidence_budget_mb * 1_000_000)

    @property
    def location(self) -> str:
        """What :class:`~watcher.store.AlertStore` opens: the URL, else the SQLite path."""
        return self.url.get_secret_value() if self.url is not None else self.path

    @property
    def shown(self) -> str:
        """The location as it may be printed: the password masked."""
        return shown(parse_location(self.location))

    def register_secrets(self) -> None:
        """Tell the log redactor the database password (and the URL holding it)."""
        if self.url is None:
            return
        password = parse_location(self.url.get_secret_value()).password
        if password:
            register_secret(str(password))
            register_secret(self.url.get_secret_value())


def _resolve(value: str, info: ValidationInfo) -> str:
    context = info.context if isinstance(info.context, Mapping) else {}
    base = Path(context.get(BASE_DIR) or Path.cwd())
    return os.path.normpath(base / Path(value).expanduser())
