"""Camera groups: the unit of work one instance owns.

A rule about several streams (``streams: [dock, yard]``) asks one question
about all of them, so those streams must be published and asked about by the
same instance. The groups are the connected components of the graph whose
nodes are the enabled streams and whose edges are the multi-stream rules; a
stream no rule ties to another is a group of its own.

A group's id is its stream names, sorted, joined by ``+`` (``dock+yard``): it
only changes when the rules tying the streams change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CameraGroup:
    id: str
    streams: tuple[str, ...]
    """The group's stream names, sorted."""

    @property
    def size(self) -> int:
        return len(self.streams)


def camera_groups(streams: Iterable[str], rule_streams: Iterable[Sequence[str]],
                  ) -> list[CameraGroup]:
    """The groups of ``streams`` that the rules' stream lists tie together, sorted by id.

    Stream names a rule lists that are not in ``streams`` (disabled streams) are ignored.
    """
    parent: dict[str, str] = {name: name for name in streams}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for names in rule_streams:
        known = [n for n in names if n in parent]
        for other in known[1:]:
            a, b = root(known[0]), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[str, list[str]] = {}
    for name in parent:
        members.setdefault(root(name), []).append(name)
    groups = [CameraGroup("+".join(sorted(names)), tuple(sorted(names)))
              for names in members.values()]
    return sorted(groups, key=lambda g: g.id)


def group_of(groups: Iterable[CameraGroup]) -> dict[str, str]:
    """Stream name -> the id of its group."""
    return {stream: group.id for group in groups for stream in group.streams}
