"""The alert state machine: one pure step per verdict, one state per alert key.

An alert key is (rule name, stream key). Every evaluation of a rule yields a
verdict for each key: ``True`` (the condition matched), ``False`` (it did
not), or ``None`` (no verdict: model error, invalid answer, stream not
ready). :meth:`AlertPolicy.step` turns the current :class:`AlertState` and a
verdict into the next state and the :class:`Transition` s to record. It does
no I/O and never reads a clock: ``now_ms`` is passed in, so the same inputs
always give the same outputs, and a state reloaded after a restart resumes
exactly where it stopped.

Semantics follow Prometheus/Alertmanager (``for``, ``keep_firing_for``,
``repeat_interval``) and ElastAlert (``realert`` as ``cooldown_ms``).

Transitions (``quiet`` = ``resolved`` if an episode ever fired, else ``inactive``)::

    from                 verdict   condition                              to        emits
    -------------------  --------  -------------------------------------  --------  --------
    any                  None      -                                      unchanged -
    inactive, resolved   match     due at once (for_count 1, for_ms 0,    firing    firing
                                   or neither set)
    inactive, resolved   match     otherwise: count 1, since = now        pending   -
    pending              match     count+1 >= for_count, or               firing    firing
                                   now - pending_since >= for_ms
    pending              match     otherwise: count+1                     pending   -
    inactive, resolved,  no match  a non-match resets the pending count   quiet     -
      pending
    firing               match     clears clearing_since                  firing    repeat?
    firing               no match  keep_firing_for_ms == 0, or            resolved  resolved
                                   now - clearing_since >= keep_firing_for
    firing               no match  otherwise (clearing_since = first      firing    repeat?
                                   non-match of this clear)

Notification (``notify``) rules:

* ``firing`` notifies unless a notification (``firing`` or ``repeat``) went
  out less than ``cooldown_ms`` ago; a suppressed firing is still emitted and
  recorded, with ``notify=False``. A new episode gets ``episode + 1``.
* ``resolved`` notifies iff the receiver was told about this episode (its
  ``firing`` or a later ``repeat`` notified): a suppressed episode resolves
  silently. Resolved notifications neither start nor obey the cooldown.
* ``repeat`` is emitted (always with ``notify=True``) on a verdict after which
  the alert is still firing, when ``repeat_every_ms`` is set and
  ``now - last_notified_ms >= max(repeat_every_ms, cooldown_ms)``. A repeat
  of a suppressed episode makes it notified, so its resolve is sent too.

``None`` verdicts: the state is returned unchanged (the same object, so a
caller can skip writing it) and nothing is emitted. A ``None`` neither
advances a pending count nor resets it, neither clears a firing alert nor
confirms it. Timing is measured between timestamps, not counted in steps,
so time spent in ``None`` s still counts: ``for_ms`` is judged at the next
match against ``pending_since_ms``, and ``keep_firing_for_ms`` at the next
non-match against ``clearing_since_ms``.

If the clock steps backwards, elapsed times are negative, so nothing becomes
due (no firing by ``for_ms``, no resolve, no repeat) and cooldown suppresses
until it catches up; ``cooldown_ms == 0`` never suppresses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Kind(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    REPEAT = "repeat"


@dataclass(frozen=True, slots=True)
class Transition:
    """Something to record (and, if ``notify``, to deliver)."""

    kind: Kind
    notify: bool
    at_ms: int
    episode: int


@dataclass(frozen=True, slots=True)
class AlertState:
    """Everything needed to resume one alert key after a restart.

    ``pending_*`` are set only while pending; ``firing_since_ms`` and
    ``clearing_since_ms`` only while firing. ``episode`` and
    ``episode_notified`` describe the current or, once quiet, the last episode.
    """

    status: Status = Status.INACTIVE
    pending_count: int = 0
    pending_since_ms: int | None = None
    firing_since_ms: int | None = None
    last_match_ms: int | None = None
    clearing_since_ms: int | None = None
    last_notified_ms: int | None = None
    """When the last ``firing`` or ``repeat`` notification went out (cooldown base)."""
    episode: int = 0
    episode_notified: bool = False
    updated_ms: int | None = None
    """Time of the last verdict that changed anything (``None`` verdicts do not)."""

    def __post_init__(self) -> None:
        if self.status is Status.PENDING:
            ok = self.pending_count >= 1 and self.pending_since_ms is not None
        else:
            ok = self.pending_count == 0 and self.pending_since_ms is None
        if not ok:
            raise ValueError(f"pending fields must be set iff pending: {self}")
        if (self.status is Status.FIRING) != (self.firing_since_ms is not None):
            raise ValueError(f"firing_since_ms must be set iff firing: {self}")
        if self.status is not Status.FIRING and self.clearing_since_ms is not None:
            raise ValueError(f"clearing_since_ms is only set while firing: {self}")
        if self.episode < 0 or (self.status is Status.FIRING and self.episode < 1):
            raise ValueError(f"bad episode number: {self}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping; :meth:`from_dict` reverses it."""
        data = asdict(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        """Rebuild a state; unknown keys are ignored and missing ones take defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "status" in values:
            values["status"] = Status(values["status"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How one rule turns verdicts into alerts. Set at most one of ``for_count``, ``for_ms``."""

    for_count: int | None = None
    """Consecutive matches needed to fire; 1 fires on the first match."""
    for_ms: int | None = None
    """How long the condition must hold: fire on the first match at which
    ``now - pending_since_ms >= for_ms``; 0 fires on the first match."""
    keep_firing_for_ms: int = 0
    """Stay firing this long after the condition clears; 0 resolves at once."""
    cooldown_ms: int = 0
    """Least time between a notification and the next ``firing`` notification."""
    repeat_every_ms: int | None = None
    """Re-notify while still firing; ``None`` never does."""

    def __post_init__(self) -> None:
        if self.for_count is not None and self.for_ms is not None:
            raise ValueError("set for_count or for_ms, not both")
        if self.for_count is not None and self.for_count < 1:
            raise ValueError("for_count must be >= 1")
        if self.for_ms is not None and self.for_ms < 0:
            raise ValueError("for_ms must be >= 0")
        if self.keep_firing_for_ms < 0 or self.cooldown_ms < 0:
            raise ValueError("keep_firing_for_ms and cooldown_ms must be >= 0")
        if self.repeat_every_ms is not None and self.repeat_every_ms <= 0:
            raise ValueError("repeat_every_ms must be > 0 (or None)")

    def step(
        self, state: AlertState, matched: bool | None, now_ms: int
    ) -> tuple[AlertState, list[Transition]]:
        """Apply one verdict at ``now_ms``; see the module docstring for the table."""
        if matched is None:
            return state, []
        if state.status is Status.FIRING:
            return self._while_firing(state, matched, now_ms)
        if not matched:
            quiet = replace(
                state, status=_quiet(state.episode), pending_count=0,
                pending_since_ms=None, updated_ms=now_ms,
            )
            return quiet, []
        pending = state.status is Status.PENDING
        count = state.pending_count + 1 if pending else 1
        since = state.pending_since_ms if pending and state.pending_since_ms is not None else now_ms
        state = replace(state, last_match_ms=now_ms, updated_ms=now_ms)
        if self._due(count, since, now_ms):
            return self._fire(state, now_ms)
        return replace(state, status=Status.PENDING, pending_count=count,
                       pending_since_ms=since), []

    def _due(self, count: int, since_ms: int, now_ms: int) -> bool:
        if self.for_count is not None:
            return count >= self.for_count
        if self.for_ms is not None:
            return now_ms - since_ms >= self.for_ms
        return True

    def _fire(self, state: AlertState, now_ms: int) -> tuple[AlertState, list[Transition]]:
        last = state.last_notified_ms
        notify = self.cooldown_ms == 0 or last is None or now_ms - last >= self.cooldown_ms
        episode = state.episode + 1
        fired = replace(
            state, status=Status.FIRING, pending_count=0, pending_since_ms=None,
            firing_since_ms=now_ms, clearing_since_ms=None, episode=episode,
            episode_notified=notify, last_notified_ms=now_ms if notify else last,
        )
        return fired, [Transition(Kind.FIRING, notify, now_ms, episode)]

    def _while_firing(
        self, state: AlertState, matched: bool, now_ms: int
    ) -> tuple[AlertState, list[Transition]]:
        if matched:
            state = replace(state, last_match_ms=now_ms, clearing_since_ms=None,
                            updated_ms=now_ms)
            return self._maybe_repeat(state, now_ms)
        clearing = state.clearing_since_ms if state.clearing_since_ms is not None else now_ms
        if self.keep_firing_for_ms == 0 or now_ms - clearing >= self.keep_firing_for_ms:
            resolved = replace(state, status=Status.RESOLVED, firing_since_ms=None,
                               clearing_since_ms=None, updated_ms=now_ms)
            return resolved, [
                Transition(Kind.RESOLVED, state.episode_notified, now_ms, state.episode)
            ]
        state = replace(state, clearing_since_ms=clearing, updated_ms=now_ms)
        return self._maybe_repeat(state, now_ms)

    def _maybe_repeat(
        self, state: AlertState, now_ms: int
    ) -> tuple[AlertState, list[Transition]]:
        if self.repeat_every_ms is None:
            return state, []
        last = state.last_notified_ms
        interval = max(self.repeat_every_ms, self.cooldown_ms)
        if last is not None and now_ms - last < interval:
            return state, []
        repeated = replace(state, last_notified_ms=now_ms, episode_notified=True)
        return repeated, [Transition(Kind.REPEAT, True, now_ms, state.episode)]


def _quiet(episode: int) -> Status:
    return Status.RESOLVED if episode > 0 else Status.INACTIVE
