"""The coordinator's bookkeeping: a lease it holds, what one round did, and its counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from watcher.cluster.groups import CameraGroup


@dataclass(slots=True)
class Held:
    """A group whose lease this instance holds."""

    group: CameraGroup
    epoch: int
    deadline: float
    """Monotonic time after which this instance must consider the group lost."""
    acquired_ms: int


@dataclass(slots=True)
class RoundResult:
    """What one round did (group ids), and the store error that cut it short, if any."""

    live: list[str] = field(default_factory=list)
    gained: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class ClusterStats:
    """Counts since the start, for metrics and ``/status``."""

    rounds: int = 0
    round_errors: int = 0
    acquired: int = 0
    released: int = 0
    lost: int = 0
    """Groups dropped without handing them over (stale epoch, local deadline passed)."""
