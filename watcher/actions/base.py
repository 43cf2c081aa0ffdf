"""What an action is, and how it reports a failed delivery.

An action delivers one stored alert event (or a summary of several held back
by its rate limit) to one channel. The outbox calls it with the delivery's
idempotency key, the same on every attempt for one (event, action), and
decides from the :class:`DeliveryError` it raises whether and when to retry.
Actions are registered by their config ``type`` in :data:`ACTION_TYPES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from watcher.engine.store import AlertEventRecord
from watcher.errors import WatcherError


class DeliveryError(WatcherError):
    """A delivery attempt failed.

    ``permanent``: retrying cannot help (a 4xx other than 408/429, a bad
    address); the delivery is dead-lettered at once. ``retry_after``: the
    receiver said when to come back (429/503 ``Retry-After``), in seconds.
    """

    def __init__(self, message: str, *, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Action(ABC):
    """One configured action (``actions: {NAME: {type: ..., ...}}``)."""

    type: ClassVar[str]

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.options = options

    @property
    def send_resolved(self) -> bool:
        return bool(getattr(self.options, "send_resolved", False))

    @abstractmethod
    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None:
        """Deliver one event; raise DeliveryError on failure."""

    @abstractmethod
    async def send_summary(self, events: list[AlertEventRecord], idempotency_key: str) -> None:
        """Deliver one message standing for ``events``, held back by the rate limit."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


ACTION_TYPES: dict[str, type[Action]] = {}


def register(cls: type[Action]) -> type[Action]:
    """Class decorator: make an action type available under ``cls.type``."""
    ACTION_TYPES[cls.type] = cls
    return cls
