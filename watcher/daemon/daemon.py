"""The daemon: the API (or the embedded server), stream keepers, rules, outbox, status.

Start-up order, undone in reverse on shutdown by one ``AsyncExitStack``::

    API target (embedded server) -> HTTP client -> keepers -> alert store
      -> actions + outbox -> rule engine -> status listener

So on SIGTERM the status listener closes first, the engine stops scheduling
and lets evaluations in flight finish, the outbox stops (undelivered events
stay in the store for the next start), the keepers delete their streams,
and the embedded server stops last.

:meth:`Daemon.reload` swaps in a new config while running: streams whose
config did not change keep their stream id, lease and publisher; rules and
actions are added, removed or changed without losing alert state.

Cluster mode (``cluster:``): keepers and rules exist only for the camera
groups this instance owns. The coordinator (last to start, first to stop)
calls :meth:`Daemon._gain` and :meth:`Daemon._lose` as ownership moves; every
rule write carries the group's fence. The outbox delivers for everyone: any
live instance claims due deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from watcher.actions.base import Action
from watcher.actions.config import build_action
from watcher.actions.outbox import Outbox
from watcher.clock import SystemClock
from watcher.cluster.coordinator import Coordinator
from watcher.cluster.groups import CameraGroup, group_of
from watcher.cluster.sqlstore import GroupFence, SqlClusterStore
from watcher.cluster.work import config_groups, owned_rules, owned_streams
from watcher.config import StreamConfig, WatcherConfig, load_config
from watcher.console.api import ConsoleSource
from watcher.console.clips import ClipRecorder
from watcher.daemon.api import api_client
from watcher.daemon.chores import prune_forever, report_first_frames, watch_files
from watcher.duration import format_duration
from watcher.engine.engine import RuleEngine
from watcher.engine.pending import StepWriter
from watcher.engine.rules import RuleConfig
from watcher.engine.silences import SilenceBook
from watcher.engine.storehealth import MonitoredStore, StoreHealth
from watcher.errors import ConfigError, WatcherError
from watcher.keeper.keeper import StreamKeeper
from watcher.observe.server import status_listener
from watcher.observe.source import StatusSource
from watcher.overshoot.client import OvershootClient
from watcher.store.lock import daemon_store

log = logging.getLogger("watcher.daemon")  # one logger for the whole daemon package

RESTART_SECTIONS = ("overshoot", "state", "status", "cluster")
"""Sections a reload cannot apply: the running values stay until a restart."""
LOSE_WAIT_S = 2.0
"""Cluster mode: how long stopping a group waits for an evaluation in flight."""


class Daemon:
    """Runs until :meth:`request_stop`; then cleans up and returns."""

    def __init__(self, config: WatcherConfig, path: str | Path | None = None) -> None:
        self.config = config
        self.path = Path(path) if path is not None else None
        self.keepers: dict[str, StreamKeeper] = {}
        self.actions: dict[str, Action] = {}
        self.engine: RuleEngine | None = None
        self.outbox: Outbox | None = None
        self.store: MonitoredStore | None = None
        self.store_health = StoreHealth()
        self.writer: StepWriter | None = None
        self.status: StatusSource | None = None
        self.coordinator: Coordinator | None = None
        self._owned: set[str] | None = None if config.cluster is None else set()
        """Cluster mode: the camera groups this instance runs (None: every stream)."""
        self.silences: SilenceBook | None = None
        self.clips: ClipRecorder | None = None
        self.status_url: str | None = None
        """The status listener's (and console's) base URL once it listens."""
        self._client: OvershootClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._stop = asyncio.Event()
        self._reloading = asyncio.Lock()
        self.ready = asyncio.Event()
        """Set once everything has started (for tests and tools)."""

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, *, watch: bool = False) -> None:
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            # First the state: a locked, outdated or unreachable store fails at once.
            store = self.store = MonitoredStore(await stack.enter_async_context(
                daemon_store(config.state.location)), self.store_health)
            log.info("alert state in %s", store.path)
            client, http = await stack.enter_async_context(api_client(config))
            self._client, self._http = client, http
            log.info("using the Overshoot API at %s", client.base_url)
            stack.push_async_callback(self._stop_keepers)
            await self._apply_streams(config)
            self.actions.update(self._build_actions(config))
            stack.push_async_callback(self._close_actions)
            await self._start_outbox()
            stack.push_async_callback(self._stop_outbox)
            state = config.state
            self.writer = StepWriter(
                store, health=self.store_health, actions=self.actions,
                max_steps=state.max_pending_steps, max_age_s=state.max_pending_age,
                evidence_budget_bytes=state.evidence_budget_bytes,
                on_recorded=self._wake_outbox)
            clock = SystemClock()
            silences = self.silences = SilenceBook(
                lambda: store.silences(since_ms=clock.now_ms()), clock.now_ms)
            await silences.start()
            stack.push_async_callback(silences.stop)
            clips = self.clips = ClipRecorder(config.clips, store,  # type: ignore[arg-type]
                                              self.keepers, clock, self._is_pulled)
            clips.start()
            stack.push_async_callback(clips.stop)
            self.engine = RuleEngine(self._wanted_rules(config), client=client,
                                     streams=self.keepers,
                                     store=store,  # type: ignore[arg-type]
                                     default_model=config.overshoot.model,
                                     actions=self.actions, on_recorded=self._wake_outbox,
                                     writer=self.writer, model_budgets=config.overshoot.budgets,
                                     silences=silences, on_stored=clips.on_stored,
                                     console_url=(config.status.public_url
                                                  if config.status.enabled else None),
                                     fence=self._fence if self._owned is not None else None)
            self.engine.paused = {rule for rule, on in (await store.load_switches()).items()
                                  if not on}
            await self.engine.start()
            stack.push_async_callback(self.engine.stop)
            self._bind_actions(config)
            self.status = StatusSource(keepers=self.keepers, engine=self.engine,
                                       outbox=self.outbox, store=store,  # type: ignore[arg-type]
                                       max_frame_age_s=config.status.max_frame_age,
                                       store_health=self.store_health)
            endpoint = None
            if config.status.enabled:
                console = ConsoleSource(
                    status=self.status, store=store, silences=silences, clips=config.clips,
                    pulled=self._is_pulled, clock=clock,
                    token_required=config.status.token is not None,
                    public_url=config.status.public_url)
                endpoint = await stack.enter_async_context(
                    status_listener(config.status, self.status, console))
                self.status_url = endpoint.url if endpoint is not None else None
            else:
                log.info("status endpoints are off; set status.enabled: true for /healthz, "
                         "/readyz, /metrics and `watcher status`")
            if config.cluster is not None:
                self.coordinator = self._coordinator(
                    config, {"status_url": endpoint.url if endpoint is not None else None,
                             "api_url": client.base_url})
                self.status.cluster = self.coordinator
                self.coordinator.start()
                stack.push_async_callback(self.coordinator.stop)
            tasks = [asyncio.create_task(report_first_frames(self.keepers)),
                     asyncio.create_task(prune_forever(store, state.keep_events_for)),
                     asyncio.create_task(store.probe_forever())]
            if watch and self.path is not None:
                tasks.append(asyncio.create_task(
                    watch_files(self.path, lambda: self.config, self.reload)))
            # Everything long-lived now exists: move it out of the collector's sight, so
            # full collections stay short (they otherwise delay rule ticks by 100+ ms).
            gc.collect()
            gc.freeze()
            self.ready.set()
            try:
                await self._stop.wait()
            finally:
                for task in tasks:
                    task.cancel()
            log.info("shutting down: finishing evaluations, keeping undelivered alerts, "
                     "deleting this daemon's streams")

    # -- reload --------------------------------------------------------------
    async def reload(self) -> bool:
        """Re-read the config file; apply it if valid, else keep running the old one."""
        if self.path is None:
            log.warning("reload: no config file to re-read")
            return False
        async with self._reloading:
            try:
                new = await asyncio.to_thread(load_config, self.path)
            except ConfigError as exc:
                log.error("reload: %s is invalid; still running the previous config:\n%s",
                          self.path, "\n".join(exc.problems))
                return False
            changes = await self._apply(new)
            log.info("reload: %s", "; ".join(changes) if changes else "nothing changed")
            return True

    async def _apply(self, new: WatcherConfig) -> list[str]:
        old, changes = self.config, []
        kept = {}
        for section in RESTART_SECTIONS:
            if getattr(old, section) != getattr(new, section):
                changes.append(f"{section} changed: restart to apply it")
                kept[section] = getattr(old, section)  # what still runs
        changes += await self._apply_streams(new)
        changes += await self._apply_actions(new)
        if self.engine is not None:
            changes += await self.engine.apply(self._wanted_rules(new))
            self._bind_actions(new)
        if self.coordinator is not None:
            self.coordinator.set_groups(config_groups(new))  # the next round hands over
        self.config = new.model_copy(update=kept)
        return changes

    async def _apply_streams(self, config: WatcherConfig) -> list[str]:
        assert self._client is not None
        wanted = {s.name: s for s in self._wanted_streams(config)}
        changes = []
        for name in [n for n in self.keepers if n not in wanted]:
            await self.keepers.pop(name).stop()
            changes.append(f"stream {name} removed")
        for name, spec in wanted.items():
            keeper = self.keepers.get(name)
            if keeper is not None and keeper.spec.model_dump() == spec.model_dump():
                continue
            if keeper is not None:
                await keeper.stop()
                changes.append(f"stream {name} changed")
            else:
                changes.append(f"stream {name} added")
            keeper = StreamKeeper(spec, self._client, http=self._http,
                                  gate=self._gate(spec.name))
            self.keepers[name] = keeper
            keeper.start()
        return changes

    async def _apply_actions(self, config: WatcherConfig) -> list[str]:
        changed = sorted(set(self.actions) ^ set(config.actions) | {
            n for n in set(self.actions) & set(config.actions)
            if self.actions[n].options != config.actions[n]})
        if not changed:
            return []
        await self._stop_outbox()
        await self._close_actions()
        self.actions.clear()
        self.actions.update(self._build_actions(config))
        await self._start_outbox()
        if self.status is not None:
            self.status.outbox = self.outbox
        return [f"action {n} {'removed' if n not in config.actions else 'updated'}"
                for n in changed]

    # -- cluster mode ----------------------------------------------------------
    def _wanted_streams(self, config: WatcherConfig) -> list[StreamConfig]:
        """The streams this instance keeps: all enabled ones, or its groups' in a cluster."""
        if self._owned is None:
            return [s for s in config.streams if s.enabled]
        return owned_streams(config, self._owned)

    def _wanted_rules(self, config: WatcherConfig) -> list[RuleConfig]:
        return config.rules if self._owned is None else owned_rules(config, self._owned)

    def _coordinator(self, config: WatcherConfig, info: dict[str, Any]) -> Coordinator:
        assert config.cluster is not None and self.store is not None
        cluster = config.cluster
        log.info("cluster mode: instance %s, heartbeat %s, lease %s", cluster.member_id,
                 format_duration(cluster.heartbeat), format_duration(cluster.lease))
        return Coordinator(SqlClusterStore(self.store.db.engine),
                           instance_id=cluster.member_id, heartbeat_s=cluster.heartbeat,
                           lease_s=cluster.lease, groups=config_groups(config),
                           on_gain=self._gain, on_lose=self._lose, info=info)

    def _gate(self, stream: str) -> Callable[[], bool] | None:
        """Cluster mode: publish a stream's frames only while its group's lease is held
        (checked on the monotonic clock at every frame, so a process resumed after a
        freeze sends nothing more for the groups it lost)."""
        coordinator = self.coordinator
        if self._owned is None or coordinator is None:
            return None
        group = group_of(coordinator.groups.values()).get(stream, stream)
        return lambda: coordinator.owns(group)

    def _fence(self, streams: Sequence[str]) -> GroupFence:
        """The fence of a rule's writes: its group's current lease (LeaseLostError if gone)."""
        assert self.coordinator is not None
        group = group_of(self.coordinator.groups.values()).get(streams[0], streams[0])
        return GroupFence(self.coordinator.token(group), on_stale=self.coordinator.lost)

    async def _gain(self, group: CameraGroup, epoch: int) -> None:
        """Start a group this instance now owns: keepers, then rules (whose alert state
        is loaded from the store before their first tick)."""
        assert self._owned is not None and self.engine is not None
        async with self._reloading:
            self._owned.add(group.id)
            changes = await self._apply_streams(self.config)
            changes += await self.engine.apply(self._wanted_rules(self.config))
        log.info("cluster: started group %s (epoch %d): %s", group.id, epoch,
                 "; ".join(changes) or "nothing to start")

    async def _lose(self, group: CameraGroup, why: str) -> None:
        """Stop a group: its rules first (a write still in flight is fenced off), then
        its keepers (which delete their streams)."""
        assert self._owned is not None and self.engine is not None
        async with self._reloading:
            self._owned.discard(group.id)
            changes = await self.engine.apply(self._wanted_rules(self.config),
                                              retire_wait_s=LOSE_WAIT_S)
            changes += await self._apply_streams(self.config)
        log.info("cluster: stopped group %s (%s): %s", group.id, why,
                 "; ".join(changes) or "nothing was running")

    # -- parts ---------------------------------------------------------------
    def _is_pulled(self, stream: str) -> bool:
        """Whether the API server pulls ``stream`` itself (no frames pass through here)."""
        spec = next((s for s in self.config.streams if s.name == stream), None)
        return spec is not None and spec.pull

    def _build_actions(self, config: WatcherConfig) -> dict[str, Action]:
        assert self._http is not None
        return {name: build_action(name, options, http=self._http)
                for name, options in config.actions.items()}

    def _bind_actions(self, config: WatcherConfig) -> None:
        """Hand the engine and rules to actions that follow them (Home Assistant)."""
        for action in self.actions.values():
            bind = getattr(action, "bind", None)
            if bind is not None:
                bind(self.engine, config.rules, public_url=_public_url(config),
                     save_switch=self._save_switch)

    async def _save_switch(self, rule: str, enabled: bool) -> None:
        if self.store is not None:
            try:
                await self.store.save_switch(rule, enabled)
            except WatcherError as exc:
                log.warning("rule %s: could not persist the switch: %s", rule, exc)

    async def _close_actions(self) -> None:
        for action in self.actions.values():
            with contextlib.suppress(Exception):
                await action.aclose()

    async def _start_outbox(self) -> None:
        assert self.store is not None
        self.outbox = Outbox(self.store, self.actions, SystemClock())  # type: ignore[arg-type]
        self.outbox.start()

    async def _stop_outbox(self) -> None:
        if self.outbox is not None:
            await self.outbox.stop()

    def _wake_outbox(self) -> None:
        if self.outbox is not None:
            self.outbox.wake()

    async def _stop_keepers(self) -> None:
        await asyncio.gather(*(k.stop() for k in self.keepers.values()),
                             return_exceptions=True)

def _public_url(config: WatcherConfig) -> str | None:
    """Where the console's pages are reachable from outside, if configured."""
    return getattr(config.status, "public_url", None) or None
