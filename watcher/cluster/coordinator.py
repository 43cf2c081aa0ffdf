"""The coordinator: heartbeat, membership, and the leases of the camera groups this instance owns.

Two loops, each every ``heartbeat``, so that renewals never wait for a slow
handover::

    keepalive:  heartbeat (member row)  ->  renew every held lease in one statement
                a lease not renewed (another instance took it: our epoch is stale) -> lose it
                between rounds: drop groups whose local deadline has passed
    balance:    read members and leases -> live: members seen within ``lease`` (and me)
                desired owners = assign(groups, live)
                held groups now desired elsewhere: stop them (rules, keepers), release
                groups desired here whose lease is free (released, expired, or ours):
                acquire (the epoch goes up by one), then start them (keepers, alert
                state, rules)

Safety does not rest on the instances agreeing about membership: the lease
row decides. A group's new owner starts it only once the old owner released
it (after stopping it) or its lease expired; and an owner stops a group by
itself when its *local* deadline passes, ``lease - heartbeat`` after the last
successful renewal began (on a monotonic clock), before the row can expire
for the others. A process frozen past its lease therefore finds, on waking,
that its deadlines have passed: :meth:`Coordinator.token` refuses to issue a
fencing token from then on, and the store refuses the stale epoch anyway.

The store being unreachable is not a loss by itself: the groups are kept
until their local deadlines, so a short database outage changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from watcher.clock import Clock, SystemClock
from watcher.cluster.assign import assign
from watcher.cluster.groups import CameraGroup
from watcher.cluster.leases import ClusterStore, FenceToken, Lease, Member
from watcher.cluster.rounds import ClusterStats, Held, RoundResult
from watcher.errors import LeaseLostError

log = logging.getLogger(__name__)

WATCHDOG_S = 0.25
"""How often local lease deadlines are checked between rounds."""

OnGain = Callable[[CameraGroup, int], Awaitable[None]]
OnLose = Callable[[CameraGroup, str], Awaitable[None]]
Monotonic = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


class Coordinator:
    """Keeps this instance's share of the camera groups; ``on_gain``/``on_lose`` do the work.

    ``on_lose`` must stop the group's rules and then its keepers before it
    returns: the lease is released only after it.
    """

    def __init__(self, store: ClusterStore, *, instance_id: str, heartbeat_s: float,
                 lease_s: float, groups: Sequence[CameraGroup], on_gain: OnGain,
                 on_lose: OnLose, clock: Clock | None = None,
                 monotonic: Monotonic = time.monotonic, sleep: Sleep = asyncio.sleep,
                 info: dict[str, Any] | None = None) -> None:
        if lease_s <= heartbeat_s:
            raise ValueError("the lease must be longer than the heartbeat")
        self.store = store
        self.instance_id = instance_id
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.groups = {g.id: g for g in groups}
        self.info = dict(info or {})
        self.stats = ClusterStats()
        self.members: list[Member] = []
        self.leases: dict[str, Lease] = {}
        self.last_round_ms: int | None = None
        self.last_error: str | None = None
        self._on_gain = on_gain
        self._on_lose = on_lose
        self._clock = clock or SystemClock()
        self._monotonic = monotonic
        self._sleep = sleep
        self._held: dict[str, Held] = {}
        self._lock = asyncio.Lock()
        self._started_ms = self._clock.now_ms()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._dropping: set[asyncio.Task[None]] = set()
        self._stopping_groups: set[str] = set()
        """Groups dropped in the background whose rules and keepers are still stopping."""

    # -- what the rest of the daemon asks ------------------------------------
    @property
    def lease_ms(self) -> int:
        return round(self.lease_s * 1000)

    @property
    def validity_s(self) -> float:
        """How long after a renewal began this instance trusts its lease."""
        return self.lease_s - self.heartbeat_s

    def held(self) -> dict[str, int]:
        """Group id -> epoch, for the groups held now."""
        return {g: h.epoch for g, h in self._held.items()}

    def owns(self, group_id: str) -> bool:
        held = self._held.get(group_id)
        return held is not None and self._monotonic() < held.deadline

    def token(self, group_id: str) -> FenceToken:
        """The fencing token every write for ``group_id`` carries.

        Raises :class:`LeaseLostError` when the group is not held, or its
        local deadline has passed (the group is then dropped in the background).
        """
        held = self._held.get(group_id)
        if held is None:
            raise LeaseLostError(f"camera group {group_id} is not owned by "
                                 f"{self.instance_id}", group_id=group_id)
        if self._monotonic() >= held.deadline:
            self._drop_soon(group_id, "its lease was not renewed in time")
            raise LeaseLostError(f"camera group {group_id}: the lease of {self.instance_id} "
                                 "ran out", group_id=group_id)
        return FenceToken(group_id, self.instance_id, held.epoch)

    def lost(self, group_id: str, why: str) -> None:
        """A write was refused as stale: drop the group (in the background)."""
        self._drop_soon(group_id, why)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="cluster-coordinator")

    async def stop(self) -> None:
        """Stop every held group, release its lease, and leave the member list."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.settle()
        async with self._lock:
            for group_id in list(self._held):
                held = self._held.pop(group_id, None)
                if held is None:  # dropped meanwhile (a refused fence, a lapsed deadline)
                    continue
                await self._stop_group(held.group, "this instance is shutting down")
                with contextlib.suppress(Exception):
                    if await self.store.release(group_id, self.instance_id, held.epoch):
                        self.stats.released += 1
            with contextlib.suppress(Exception):
                await self.store.leave(self.instance_id)

    async def _run(self) -> None:
        """Two loops: renewals never wait for a slow handover (starting or stopping a
        group's keepers and rules takes seconds on a busy machine)."""
        await asyncio.gather(self._keepalive_loop(), self._balance_loop())

    async def _keepalive_loop(self) -> None:
        while not self._stopping:
            started = self._monotonic()
            await self.renew_leases()
            while not self._stopping:
                left = started + self.heartbeat_s - self._monotonic()
                if left <= 0:
                    break
                await self._sleep(min(left, WATCHDOG_S))
                self._expire_locally()

    async def _balance_loop(self) -> None:
        while not self._stopping:
            started = self._monotonic()
            await self.balance()
            left = started + self.heartbeat_s - self._monotonic()
            if left > 0:
                await self._sleep(left)

    # -- one round -----------------------------------------------------------
    async def step(self) -> RoundResult:
        """One round (see the module docstring): :meth:`renew_leases`, then :meth:`balance`.
        Errors of the store are logged, not raised."""
        renewed = await self.renew_leases()
        result = await self.balance()
        result.lost = renewed.lost + result.lost
        result.error = result.error or renewed.error
        return result

    async def renew_leases(self) -> RoundResult:
        """Heartbeat and renew every held lease; a lease another instance took is dropped."""
        result = RoundResult()
        started = self._monotonic()
        now_ms = self._clock.now_ms()
        held = self.held()
        try:
            await self.store.heartbeat(Member(self.instance_id, now_ms, self._started_ms,
                                              self.info))
            renewed = (await self.store.renew(self.instance_id, held, now_ms, self.lease_ms)
                       if held else set())
        except Exception as exc:  # the store is unreachable: keep what we hold
            self._store_error(exc, result)
            return result
        for group_id, epoch in held.items():
            current = self._held.get(group_id)
            if current is None or current.epoch != epoch:
                continue  # released or re-acquired meanwhile
            if group_id in renewed:
                current.deadline = max(current.deadline, started + self.validity_s)
            else:
                self._drop_soon(group_id, "another instance took it over")
                result.lost.append(group_id)
        return result

    def _store_error(self, exc: Exception, result: RoundResult) -> None:
        self.stats.round_errors += 1
        result.error = f"{type(exc).__name__}: {exc}"
        if self.last_error is None:
            log.warning("cluster: cannot reach the cluster store (%s); keeping %d "
                        "group(s) until their leases run out", result.error, len(self._held))
        self.last_error = result.error

    def _expire_locally(self) -> list[str]:
        """Drop (in the background) the held groups whose local deadline has passed."""
        now = self._monotonic()
        expired = [g for g, h in self._held.items() if now >= h.deadline]
        for group_id in expired:
            self._drop_soon(group_id, "its lease was not renewed in time")
        return expired

    async def balance(self) -> RoundResult:
        """Read members and leases; hand over what should run elsewhere; acquire what
        should run here."""
        await self.settle()
        async with self._lock:
            result = RoundResult()
            self.stats.rounds += 1
            result.lost += self._expire_locally()
            await self.settle()
            now_ms = self._clock.now_ms()
            try:
                members = await self.store.members()
                leases = {lease.group_id: lease for lease in await self.store.leases()}
            except Exception as exc:
                self._store_error(exc, result)
                return result
            if self.last_error is not None:
                log.info("cluster: the cluster store answers again")
                self.last_error = None
            self.members, self.leases, self.last_round_ms = members, leases, now_ms
            live = sorted({m.instance_id for m in members
                           if now_ms - m.last_seen_ms < self.lease_ms} | {self.instance_id})
            result.live = live
            desired = assign(list(self.groups.values()), live)
            for group_id in [g for g in self._held if desired.get(g) != self.instance_id]:
                target = desired.get(group_id)
                why = (f"handed over to {target}" if target is not None
                       else "the group is no longer configured")
                held = self._held[group_id]
                await self._drop(group_id, why, counted=False)
                try:
                    if await self.store.release(group_id, self.instance_id, held.epoch):
                        self.stats.released += 1
                        result.released.append(group_id)
                except Exception as exc:  # it expires by itself
                    log.warning("cluster: could not release group %s: %s", group_id, exc)
            for group in self.groups.values():
                if (desired.get(group.id) != self.instance_id or group.id in self._held
                        or group.id in self._stopping_groups):
                    continue
                lease = leases.get(group.id)
                if (lease is not None and not lease.free(now_ms)
                        and lease.owner != self.instance_id):
                    continue  # its owner has not let go yet
                # the time of THIS acquisition (starting earlier groups may have taken long)
                asked, asked_ms = self._monotonic(), self._clock.now_ms()
                try:
                    epoch = await self.store.acquire(group.id, self.instance_id, asked_ms,
                                                     self.lease_ms)
                except Exception as exc:
                    log.warning("cluster: could not acquire group %s: %s", group.id, exc)
                    continue
                if epoch is None:
                    continue
                self._held[group.id] = Held(group, epoch, asked + self.validity_s, asked_ms)
                self.stats.acquired += 1
                result.gained.append(group.id)
                log.info("cluster: %s owns group %s (epoch %d)", self.instance_id, group.id,
                         epoch)
                try:
                    await self._on_gain(group, epoch)
                except Exception:
                    log.exception("cluster: starting group %s failed", group.id)
            return result

    def set_groups(self, groups: Sequence[CameraGroup]) -> None:
        """A new group list (after a reload); the next round hands over what moved."""
        self.groups = {g.id: g for g in groups}

    async def drop_expired(self) -> list[str]:
        """Stop the held groups whose local deadline has passed; their ids."""
        expired = self._expire_locally()
        await self.settle()
        return expired

    async def _drop(self, group_id: str, why: str, *, counted: bool = True) -> None:
        held = self._held.pop(group_id, None)
        if held is None:
            return
        if counted:
            self.stats.lost += 1
            log.warning("cluster: %s lost group %s (epoch %d): %s", self.instance_id,
                        group_id, held.epoch, why)
        else:
            log.info("cluster: %s stops group %s (epoch %d): %s", self.instance_id, group_id,
                     held.epoch, why)
        await self._stop_group(held.group, why)

    async def _stop_group(self, group: CameraGroup, why: str) -> None:
        try:
            await self._on_lose(group, why)
        except Exception:
            log.exception("cluster: stopping group %s failed", group.id)

    def _drop_soon(self, group_id: str, why: str) -> None:
        """Forget the group at once (no token is issued for it from now on), and stop its
        rules and keepers in the background."""
        held = self._held.pop(group_id, None)
        if held is None:
            return
        self.stats.lost += 1
        log.warning("cluster: %s lost group %s (epoch %d): %s", self.instance_id, group_id,
                    held.epoch, why)

        self._stopping_groups.add(group_id)

        async def stop() -> None:
            try:
                await self._stop_group(held.group, why)
            finally:
                self._stopping_groups.discard(group_id)

        task = asyncio.get_running_loop().create_task(stop())
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def settle(self) -> None:
        """Wait until the groups dropped in the background have stopped."""
        while self._dropping:
            await asyncio.gather(*list(self._dropping), return_exceptions=True)

    # -- visibility ----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The cluster as this instance last saw it (for /status, metrics, `watcher status`)."""
        now_ms = self._clock.now_ms()
        members = [{"instance_id": m.instance_id,
                    "heartbeat_age_s": round((now_ms - m.last_seen_ms) / 1000, 3),
                    "live": now_ms - m.last_seen_ms < self.lease_ms,
                    "started_ms": m.started_ms, **{k: v for k, v in m.info.items()
                                                   if k not in ("instance_id",)}}
                   for m in self.members]
        groups = []
        for group in self.groups.values():
            lease = self.leases.get(group.id)
            groups.append({
                "group": group.id, "streams": list(group.streams),
                "owner": lease.owner if lease is not None else None,
                "epoch": lease.epoch if lease is not None else None,
                "expires_in_s": (round((lease.expires_ms - now_ms) / 1000, 3)
                                 if lease is not None and lease.owner is not None else None),
                "mine": group.id in self._held,
            })
        return {
            "instance_id": self.instance_id,
            "heartbeat_s": self.heartbeat_s,
            "lease_s": self.lease_s,
            "members": members,
            "groups": groups,
            "owned": {g: h.epoch for g, h in sorted(self._held.items())},
            "store_error": self.last_error,
            "stats": {"rounds": self.stats.rounds, "round_errors": self.stats.round_errors,
                      "acquired": self.stats.acquired, "released": self.stats.released,
                      "lost": self.stats.lost},
        }
