"""StepWriter and StoreHealth on a real SQLite store: order, bounds, evidence budget."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from support.poll import eventually
from support.storefaults import ExclusiveLock

from watcher.clock import ManualClock
from watcher.engine.pending import StepWriter
from watcher.engine.state import AlertState, Kind, Status, Transition
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.engine.storehealth import MonitoredStore, StoreHealth


class Sent:
    """An action that keeps what it got (best-effort deliveries)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int | None]] = []

    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None:
        self.got.append((idempotency_key, event.id))


def firing(n: int, at_ms: int, snapshot: bytes | None = None,
           ) -> tuple[AlertState, AlertEventRecord]:
    state = AlertState(status=Status.FIRING, firing_since_ms=at_ms, episode=n,
                       episode_notified=True, last_notified_ms=at_ms, updated_ms=at_ms)
    event = AlertEventRecord.from_transition("r", "cam", Transition(Kind.FIRING, True, at_ms, n),
                                             snapshot=snapshot)
    return state, event


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def store(tmp_path: Path):
    inner = AlertStore(tmp_path / "state.sqlite3")
    yield inner
    await inner.close()


async def test_steps_wait_in_order_while_locked_then_are_written_once(
        store: AlertStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watcher.engine.storehealth")
    clock = ManualClock()
    health = StoreHealth(clock)
    monitored = MonitoredStore(store, health)
    writer = StepWriter(monitored, health=health, clock=clock, actions={"ops": Sent()},
                        sleep=no_sleep)
    async with ExclusiveLock(tmp_path / "state.sqlite3"):
        for n in (1, 2, 3):
            state, event = firing(n, clock.now_ms())
            assert await writer.write("r", "cam", state, [event], [["ops"]]) is None
            clock.advance(1)
        assert writer.pending == 3 and not health.available
        assert health.errors_total >= 1
    await eventually(lambda: writer.pending == 0 and health.available, timeout=30)
    events = sorted(await store.events(), key=lambda e: e.id)
    assert [e.episode for e in events] == [1, 2, 3]  # in the order they happened
    assert (await store.load_state("r", "cam")).episode == 3  # the newest state
    assert {d.idempotency_key for e in events for d in await store.deliveries_for_event(e.id)} \
        == {f"{e.event_key}:ops" for e in events}
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("state store unavailable")]) == 1
    assert len([m for m in messages if m.startswith("state store back")]) == 1


async def test_a_full_queue_notifies_best_effort_and_stays_bounded(
        store: AlertStore, tmp_path: Path) -> None:
    clock = ManualClock()
    action = Sent()
    writer = StepWriter(store, clock=clock, actions={"ops": action}, max_steps=2,
                        max_age_s=3600, sleep=no_sleep)
    async with ExclusiveLock(tmp_path / "state.sqlite3"):
        for n in range(1, 26):
            state, event = firing(n, clock.now_ms(), snapshot=b"\xff" * 1000)
            await writer.write("r", "cam", state, [event], [["ops"]])
            clock.advance(1)
        # past max_steps: the oldest were sent (no id: not persisted); the hard limit holds
        await eventually(lambda: len(action.got) >= 5, timeout=20)
        assert all(event_id is None for _, event_id in action.got)
        assert writer.pending <= 2 * 10 and writer.stats.dropped == 25 - 20
        assert all(e.snapshot is None for s in list(writer._queue)[:-2] for e in s.events)
    await eventually(lambda: writer.pending == 0, timeout=30)
    stored = await store.events(limit=100)
    assert len(stored) == 20  # the records kept in memory, written once the store was back
    sent = {key for key, _ in action.got}
    for event in stored:  # an event sent best effort is not sent again by the outbox
        keys = {d.idempotency_key for d in await store.deliveries_for_event(event.id)}
        assert not keys & sent


async def test_evidence_stays_within_the_budget_oldest_dropped_first(store: AlertStore) -> None:
    clock = ManualClock()
    writer = StepWriter(store, clock=clock, evidence_budget_bytes=10_000)
    for n in range(1, 8):
        state, event = firing(n, clock.now_ms(), snapshot=bytes([n]) * 3000)
        assert await writer.write("r", "cam", state, [event], [[]]) is not None
        clock.advance(1)
    assert await store.evidence_bytes() <= 10_000
    events = sorted(await store.events(), key=lambda e: e.episode)
    assert len(events) == 7  # every alert record stays
    kept = [e.episode for e in events if e.snapshot is not None]
    assert kept == [5, 6, 7]  # the newest evidence
    assert all(e.snapshot_type is None for e in events if e.snapshot is None)
    assert writer.stats.evidence_dropped == 4
    dropped, left = await store.drop_oldest_evidence(0.5)
    assert dropped == 2 and left == 3000
