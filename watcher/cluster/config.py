"""The ``cluster:`` section: this instance's name, its heartbeat and the lease length."""

from __future__ import annotations

import os
import socket

from pydantic import Field, field_validator, model_validator

from watcher.configbase import Section
from watcher.duration import Duration

DEFAULT_HEARTBEAT_S = 2.0
DEFAULT_LEASE_S = 10.0
MAX_INSTANCE_ID = 200


def default_instance_id() -> str:
    """Host name plus process id: unique among the processes of a cluster."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ClusterConfig(Section):
    """Share the cameras among every ``watcher run`` started with this config (PostgreSQL)."""

    instance_id: str | None = Field(
        None, description="This instance's name in the cluster (default: host name plus "
        "process id). Two running instances must never share one.")
    heartbeat: Duration = Field(
        DEFAULT_HEARTBEAT_S, gt=0, description="How often this instance heartbeats and "
        "renews the leases of the camera groups it owns.")
    lease: Duration = Field(
        DEFAULT_LEASE_S, gt=0, description="An instance silent this long is dead, and a "
        "group lease not renewed this long may be taken over by another instance.")

    @field_validator("instance_id")
    @classmethod
    def _usable_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            return None
        if len(value) > MAX_INSTANCE_ID or any(not c.isprintable() for c in value):
            raise ValueError(f"must be printable and at most {MAX_INSTANCE_ID} characters")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> ClusterConfig:
        if self.lease < 2 * self.heartbeat:
            raise ValueError(
                f"lease ({self.lease:g}s) must be at least twice the heartbeat "
                f"({self.heartbeat:g}s), so that one late heartbeat does not lose every group")
        return self

    @property
    def member_id(self) -> str:
        """The configured ``instance_id``, or the default one."""
        return self.instance_id or default_instance_id()
