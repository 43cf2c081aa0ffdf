"""Which live instance should own each camera group: rendezvous hashing with bounded loads.

Every instance computes the same answer from the same inputs (the group list
and the live instance ids), with no coordination. Plain rendezvous (highest
random weight) hashing moves only the groups of an instance that joins or
leaves, but its loads vary (1,000 cameras on 20 instances: 50 on average,
often 35 to 65). So each instance gets a capacity, the fair share of cameras
rounded up, and groups are placed largest first, then by id, each on the
highest-ranked instance that still has room (a group too big for the room left
anywhere goes to the emptiest instance). A change of membership still moves
few groups: most keep the instance they ranked first.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

from watcher.cluster.groups import CameraGroup


def score(instance: str, group: str) -> int:
    """The rendezvous weight of ``instance`` for ``group``: a stable 64-bit number."""
    digest = hashlib.blake2b(f"{instance}\x00{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranking(group: str, instances: Iterable[str]) -> list[str]:
    """``instances`` from most to least preferred for ``group``."""
    return sorted(instances, key=lambda i: (score(i, group), i), reverse=True)


def capacity(groups: Sequence[CameraGroup], instances: int) -> int:
    """Most cameras one instance is given (the fair share, rounded up)."""
    if instances <= 0:
        return 0
    total = sum(g.size for g in groups)
    return math.ceil(total / instances)


def assign(groups: Sequence[CameraGroup], instances: Iterable[str]) -> dict[str, str]:
    """Group id -> owning instance id; empty when there is no instance."""
    members = sorted(set(instances))
    if not members:
        return {}
    room = {i: capacity(groups, len(members)) for i in members}
    owners: dict[str, str] = {}
    for group in sorted(groups, key=lambda g: (-g.size, g.id)):
        ranked = ranking(group.id, members)
        chosen = next((i for i in ranked if room[i] >= group.size), None)
        if chosen is None:  # a group bigger than the room left anywhere: the emptiest
            chosen = max(ranked, key=lambda i: room[i])
        owners[group.id] = chosen
        room[chosen] -= group.size
    return owners


def loads(groups: Sequence[CameraGroup], owners: dict[str, str],
          instances: Iterable[str] = ()) -> dict[str, int]:
    """Cameras per instance under ``owners`` (instances named in ``instances`` start at 0)."""
    out = dict.fromkeys(instances, 0)
    size = {g.id: g.size for g in groups}
    for group, owner in owners.items():
        out[owner] = out.get(owner, 0) + size.get(group, 0)
    return out
