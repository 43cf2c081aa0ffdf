"""Members, group leases and fencing tokens, and what a cluster store must do with them.

Two tables hold the cluster (see :mod:`watcher.cluster.sqlstore` for the SQL):

* members: one row per instance, ``last_seen_ms`` moved forward at every
  heartbeat. An instance not seen for ``lease`` is dead.
* group leases: one row per camera group: ``owner``, ``epoch``,
  ``expires_ms``. A lease may be acquired when it has no owner (released),
  has expired, or already names the acquirer; every acquisition raises the
  epoch by one, so the epoch only grows. Renewal and release need the
  caller's owner AND epoch to match.

A :class:`FenceToken` (group, owner, epoch) goes with every write a group's
owner makes; the store refuses the write when the lease row no longer names
that owner and epoch (:class:`~watcher.errors.LeaseLostError`), so an
instance that was paused past its lease and resumed cannot write over the
new owner's work.

:class:`MemoryClusterStore` implements the protocol in memory, for the unit
tests and for simulating large clusters without a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Member:
    instance_id: str
    last_seen_ms: int
    started_ms: int
    info: dict[str, Any] = field(default_factory=dict)
    """What others may want to know: the status listener's URL, the API it uses."""


@dataclass(frozen=True, slots=True)
class Lease:
    group_id: str
    owner: str | None
    """None once released."""
    epoch: int
    expires_ms: int
    acquired_ms: int

    def free(self, now_ms: int) -> bool:
        """Whether another instance may acquire it now."""
        return self.owner is None or self.expires_ms < now_ms


@dataclass(frozen=True, slots=True)
class FenceToken:
    """Proof of ownership that a write carries."""

    group_id: str
    owner: str
    epoch: int


class ClusterStore(Protocol):
    """Where the members and the group leases live (PostgreSQL, or memory in tests)."""

    async def heartbeat(self, member: Member) -> None:
        """Insert or refresh this instance's member row."""
        ...

    async def leave(self, instance_id: str) -> None:
        """Remove this instance's member row (a clean shutdown)."""
        ...

    async def members(self) -> list[Member]: ...

    async def leases(self) -> list[Lease]: ...

    async def acquire(self, group_id: str, owner: str, now_ms: int, lease_ms: int,
                      ) -> int | None:
        """Take a lease that is free or already ``owner``'s (or create it).

        Returns the new epoch (one more than the last), or None if another holds it.
        """
        ...

    async def renew(self, owner: str, epochs: Mapping[str, int], now_ms: int,
                    lease_ms: int) -> set[str]:
        """Extend the leases ``owner`` holds at these epochs; the group ids renewed."""
        ...

    async def release(self, group_id: str, owner: str, epoch: int) -> bool:
        """Give a lease up (owner and epoch must match) so another may take it at once."""
        ...


class MemoryClusterStore:
    """:class:`ClusterStore` in a dict; ``calls`` counts the operations (for load figures)."""

    def __init__(self) -> None:
        self._members: dict[str, Member] = {}
        self._leases: dict[str, Lease] = {}
        self.calls: dict[str, int] = {}
        self.down = False
        """While True every call raises ConnectionError (an unreachable database)."""

    def _count(self, name: str) -> None:
        if self.down:
            raise ConnectionError("cluster store is down")
        self.calls[name] = self.calls.get(name, 0) + 1

    async def heartbeat(self, member: Member) -> None:
        self._count("heartbeat")
        old = self._members.get(member.instance_id)
        self._members[member.instance_id] = (
            member if old is None else replace(member, started_ms=old.started_ms))

    async def leave(self, instance_id: str) -> None:
        self._count("leave")
        self._members.pop(instance_id, None)

    async def members(self) -> list[Member]:
        self._count("members")
        return sorted(self._members.values(), key=lambda m: m.instance_id)

    async def leases(self) -> list[Lease]:
        self._count("leases")
        return sorted(self._leases.values(), key=lambda lease: lease.group_id)

    async def acquire(self, group_id: str, owner: str, now_ms: int, lease_ms: int,
                      ) -> int | None:
        self._count("acquire")
        old = self._leases.get(group_id)
        if old is not None and not old.free(now_ms) and old.owner != owner:
            return None
        epoch = (old.epoch if old is not None else 0) + 1
        self._leases[group_id] = Lease(group_id, owner, epoch, now_ms + lease_ms, now_ms)
        return epoch

    async def renew(self, owner: str, epochs: Mapping[str, int], now_ms: int,
                    lease_ms: int) -> set[str]:
        self._count("renew")
        renewed = set()
        for group_id, epoch in epochs.items():
            lease = self._leases.get(group_id)
            if lease is not None and (lease.owner, lease.epoch) == (owner, epoch):
                self._leases[group_id] = replace(lease, expires_ms=now_ms + lease_ms)
                renewed.add(group_id)
        return renewed

    async def release(self, group_id: str, owner: str, epoch: int) -> bool:
        self._count("release")
        lease = self._leases.get(group_id)
        if lease is None or (lease.owner, lease.epoch) != (owner, epoch):
            return False
        self._leases[group_id] = replace(lease, owner=None, expires_ms=0)
        return True

    def valid(self, token: FenceToken) -> bool:
        """Whether a write carrying ``token`` would be accepted."""
        lease = self._leases.get(token.group_id)
        return lease is not None and (lease.owner, lease.epoch) == (token.owner, token.epoch)

    def forget_members(self, instance_ids: Iterable[str]) -> None:
        """Drop member rows as if those instances had died long ago (simulations)."""
        for instance_id in instance_ids:
            self._members.pop(instance_id, None)
