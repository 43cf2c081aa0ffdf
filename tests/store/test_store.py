"""The alert store: round trips, one transaction per step, restarts, queries.

Every test runs on both backends (``state_location``: a SQLite file, then a
PostgreSQL database), except the SQLite-only ones (WAL, file schema).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from watcher.clock import ManualClock
from watcher.engine.state import AlertPolicy, AlertState, Kind, Status, Transition
from watcher.store import (
    AlertEventRecord,
    AlertStore,
    DuplicateEventError,
    SchemaError,
    StoreError,
    event_key,
)
from watcher.store.migrate import MANAGED_USER_VERSION, head

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


@pytest.fixture
def path(state_location: str) -> str:
    """The state database of the test: a SQLite file, then a PostgreSQL URL."""
    return state_location


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "alerts.db"


@pytest.fixture
async def store(path: str) -> AsyncIterator[AlertStore]:
    s = await AlertStore(path).open()
    yield s
    await s.close()


def evidence_for(rule: str, stream: str, t: Transition, **more: object) -> AlertEventRecord:
    return AlertEventRecord.from_transition(
        rule, stream, t, severity="warning", labels={"site": "dock"},
        answer={"person_present": t.kind is not Kind.RESOLVED, "people": 1},
        urls=(f"ovs://streams/{stream}/frames/-1",), stream_ids=(stream,),
        stream_time_ms=t.at_ms - 120, model="qwen-vl", usage={"total_tokens": 321}, **more,
    )


async def drive(
    store: AlertStore, policy: AlertPolicy, rule: str, stream: str,
    verdicts: list[bool | None], clock: ManualClock, state: AlertState | None = None,
) -> AlertState:
    """Step and record like the engine does: state and events together, each verdict."""
    state = state or AlertState()
    for matched in verdicts:
        clock.advance(5)
        new, transitions = policy.step(state, matched, clock.now_ms())
        if new is not state:
            events = [evidence_for(rule, stream, t) for t in transitions]
            await store.record(rule, stream, new, events)
        state = new
    return state


async def test_states_and_events_round_trip(store: AlertStore) -> None:
    clock = ManualClock()
    state = await drive(store, AlertPolicy(for_count=2), "dock", "cam1", [True, True, False],
                        clock)
    assert await store.load_state("dock", "cam1") == state
    assert await store.load_state("dock", "cam2") is None
    newest, oldest = await store.events()
    assert (newest.kind, newest.status, oldest.kind, oldest.status) == (
        Kind.RESOLVED, "resolved", Kind.FIRING, "firing")
    assert oldest == evidence_for("dock", "cam1", Transition(Kind.FIRING, True,
                                                             oldest.created_ms, 1),
                                  id=oldest.id)
    assert oldest.event_key == f"dock:cam1:1:firing:{oldest.created_ms}"
    assert oldest.urls == ("ovs://streams/cam1/frames/-1",) and oldest.usage == {
        "total_tokens": 321}
    assert await store.event(oldest.id or 0) == oldest
    assert await store.event(999) is None


async def test_record_returns_ids_in_order(store: AlertStore) -> None:
    state = AlertState(status=Status.RESOLVED, episode=1, updated_ms=20)
    events = [evidence_for("r", "s", Transition(Kind.FIRING, True, 10, 1)),
              evidence_for("r", "s", Transition(Kind.RESOLVED, True, 20, 1))]
    ids = await store.record("r", "s", state, events)
    assert len(ids) == 2 and ids[0] < ids[1]
    assert [(await store.event(i)).kind for i in ids] == [Kind.FIRING, Kind.RESOLVED]  # type: ignore[union-attr]
    assert await store.record("r", "s", replace(state, updated_ms=30)) == []


async def test_duplicate_event_key_rolls_back_the_state_too(store: AlertStore) -> None:
    firing = AlertState(status=Status.FIRING, firing_since_ms=10, episode=1,
                        episode_notified=True, last_notified_ms=10, updated_ms=10)
    first = evidence_for("r", "s", Transition(Kind.FIRING, True, 10, 1))
    await store.record("r", "s", firing, [first])
    resolved = AlertState(status=Status.RESOLVED, episode=1, episode_notified=True,
                          last_notified_ms=10, updated_ms=20)
    fresh = evidence_for("r", "s", Transition(Kind.RESOLVED, True, 20, 1))
    with pytest.raises(DuplicateEventError):  # the state row is written before the events
        await store.record("r", "s", resolved, [fresh, first])
    with pytest.raises(DuplicateEventError):  # a duplicate inside one call
        await store.record("r", "s", resolved, [fresh, fresh])
    assert await store.load_state("r", "s") == firing
    assert [e.event_key for e in await store.events()] == [first.event_key]


async def test_an_unencodable_answer_rolls_back_the_state(store: AlertStore) -> None:
    state = AlertState(status=Status.RESOLVED, episode=1, updated_ms=20)
    bad = evidence_for("r", "s", Transition(Kind.RESOLVED, True, 20, 1),
                       extra={"score": float("nan")})
    with pytest.raises(ValueError):
        await store.record("r", "s", state, [bad])
    assert await store.load_state("r", "s") is None and await store.events() == []
    assert await store.record("r", "s", state, [replace(bad, extra={})])  # still usable


async def test_events_must_belong_to_the_alert_key(store: AlertStore) -> None:
    other = evidence_for("r", "other", Transition(Kind.FIRING, True, 1, 1))
    with pytest.raises(ValueError):
        await store.record("r", "s", AlertState(updated_ms=1), [other])


async def test_restart_resumes_firing_and_pending_alerts(path: str) -> None:
    clock, policy = ManualClock(), AlertPolicy(for_count=3)
    store = AlertStore(path)
    firing = await drive(store, policy, "dock", "cam1", [True, True, True, None], clock)
    pending = await drive(store, policy, "dock", "cam2", [True, True, None], clock)
    await store.close()
    assert (firing.status, pending.status, pending.pending_count) == (
        Status.FIRING, Status.PENDING, 2)

    reopened = await AlertStore(path).open()
    try:
        assert await reopened.load_all_states() == {("dock", "cam1"): firing,
                                                     ("dock", "cam2"): pending}
        # a pending count is remembered: the third match fires, not the first of three
        after = await drive(reopened, policy, "dock", "cam2", [True], clock, pending)
        assert after.status is Status.FIRING
        # a firing alert is still firing: the next match is no new episode
        still = await drive(reopened, policy, "dock", "cam1", [True], clock, firing)
        assert still.status is Status.FIRING and still.episode == 1
        kinds = [(e.stream_key, e.kind) for e in await reopened.events()]
        assert kinds == [("cam2", Kind.FIRING), ("cam1", Kind.FIRING)]
    finally:
        await reopened.close()


async def test_events_filters_and_newest_first(store: AlertStore) -> None:
    rows = [("dock", "cam1", Kind.FIRING, 1, 100), ("dock", "cam1", Kind.REPEAT, 1, 200),
            ("gate", "cam2", Kind.FIRING, 1, 200), ("dock", "cam1", Kind.RESOLVED, 1, 300),
            ("gate", "cam2", Kind.RESOLVED, 1, 400), ("dock", "cam3", Kind.FIRING, 1, 500)]
    for rule, stream, kind, episode, at in rows:
        t = Transition(kind, True, at, episode)
        await store.record(rule, stream, AlertState(updated_ms=at),
                           [evidence_for(rule, stream, t)])

    def keys(events: list[AlertEventRecord]) -> list[tuple[str, int]]:
        return [(str(e.kind), e.created_ms) for e in events]

    assert keys(await store.events()) == [("firing", 500), ("resolved", 400),
                                          ("resolved", 300), ("firing", 200),
                                          ("repeat", 200), ("firing", 100)]
    assert keys(await store.events(limit=2)) == [("firing", 500), ("resolved", 400)]
    assert keys(await store.events(rule="gate")) == [("resolved", 400), ("firing", 200)]
    assert keys(await store.events(status="firing", rule="dock")) == [
        ("firing", 500), ("repeat", 200), ("firing", 100)]
    assert keys(await store.events(status="resolved")) == [("resolved", 400),
                                                           ("resolved", 300)]
    assert keys(await store.events(since_ms=300)) == [("firing", 500), ("resolved", 400),
                                                      ("resolved", 300)]
    assert keys(await store.events(stream_key="cam3")) == [("firing", 500)]
    assert await store.events(limit=0) == []
    with pytest.raises(ValueError):
        await store.events(limit=-1)


async def test_snapshot_bytes_are_stored_and_kept_out_of_repr(store: AlertStore) -> None:
    t = Transition(Kind.FIRING, True, 10, 1)
    record = evidence_for("r", "s", t, snapshot=JPEG)
    assert record.snapshot_type == "image/jpeg"
    assert "snapshot=" not in repr(record) and "\\xff\\xd8" not in repr(record)
    [event_id] = await store.record("r", "s", AlertState(updated_ms=10), [record])
    stored = await store.event(event_id)
    assert stored is not None and stored.snapshot == JPEG
    assert "snapshot=" not in repr(stored) and "snapshot_type='image/jpeg'" in repr(stored)
    [listed] = await store.events(snapshots=False)
    assert listed.snapshot is None and listed.snapshot_type == "image/jpeg"
    [full] = await store.events()
    assert full.snapshot == JPEG


async def test_sqlite_wal_mode_and_schema_version(sqlite_path: Path) -> None:
    async with AlertStore(sqlite_path) as store:
        await store.record("r", "s", AlertState(updated_ms=1))
        with sqlite3.connect(sqlite_path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert raw.execute("PRAGMA user_version").fetchone()[0] == MANAGED_USER_VERSION
            assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head()
            tables = {r[0] for r in raw.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"alert_state", "alert_events", "deliveries"} <= tables


async def test_a_newer_sqlite_file_of_the_old_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 3")
    with pytest.raises(SchemaError, match="schema version 3"):
        await AlertStore(path).open()


async def test_an_unknown_revision_is_refused(store: AlertStore, path: str) -> None:
    await store.close()

    async def bump(conn: object) -> None:
        await conn.exec_driver_sql(  # type: ignore[attr-defined]
            "UPDATE alembic_version SET version_num = '9999'")
    other = AlertStore(path)
    await other.db.run(bump)  # no open(): a raw write behind the store's back
    with pytest.raises(SchemaError, match="schema version 9999, newer than this watcher"):
        await other.open()
    await other.close()


async def test_reopening_does_not_migrate_twice(path: str) -> None:
    for _ in range(2):
        store = AlertStore(path)
        await store.record("r", "s", AlertState(updated_ms=1))
        await store.close()
    async with AlertStore(path, upgrade=False) as store:
        assert list(await store.load_all_states()) == [("r", "s")]


async def test_forget_drops_states_but_keeps_events(store: AlertStore) -> None:
    t = Transition(Kind.FIRING, True, 10, 1)
    firing = AlertState(status=Status.FIRING, firing_since_ms=10, episode=1, updated_ms=10)
    await store.record("old", "a", firing, [evidence_for("old", "a", t)])
    await store.record("old", "b", AlertState(updated_ms=10))
    await store.record("kept", "a", AlertState(updated_ms=10))
    assert await store.forget("old") == 2
    assert list(await store.load_all_states()) == [("kept", "a")]
    assert len(await store.events(rule="old")) == 1
    # re-added, the rule restarts at episode 1 without colliding with its old events
    again = Transition(Kind.FIRING, True, 20, 1)
    await store.record("old", "a", firing, [evidence_for("old", "a", again)])
    assert event_key("old", "a", again) != event_key("old", "a", t)


async def test_closed_store_refuses_work(path: str) -> None:
    store = AlertStore(path)
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.load_all_states()


async def test_async_context_manager_closes(path: str) -> None:
    async with AlertStore(path) as store:
        await store.record("r", "s", AlertState(updated_ms=1))
    with pytest.raises(StoreError):
        await store.load_state("r", "s")


async def test_prune_drops_old_finished_events_only(store: AlertStore) -> None:
    policy = AlertPolicy()
    state = AlertState()
    ids = []
    for at_ms, matched in ((1_000, True), (2_000, False), (3_000, True)):
        state, transitions = policy.step(state, matched, at_ms)
        events = [evidence_for("r", "cam", t, snapshot=JPEG) for t in transitions]
        ids += await store.record("r", "cam", state, events,
                                  actions_for=lambda e: ["hook"])
    first, second, third = ids
    deliveries = {e: ds[0] for e, ds in (await store.deliveries_for_events(ids)).items()}
    await store.mark_delivering(deliveries[first].id, 5_000)
    await store.mark_sent(deliveries[first].id, 5_000)
    await store.mark_delivering(deliveries[second].id, 5_000)
    await store.mark_dead(deliveries[second].id, "gone", 5_000)
    # The third is still pending: kept however old; the first two are finished.
    assert await store.prune(before_ms=10_000) == 2
    assert [e.id for e in await store.events()] == [third]
    assert list(await store.deliveries_for_events(ids)) == [third]
    assert await store.prune(before_ms=10_000) == 0


async def test_rule_switches_survive_a_reopen(path: str) -> None:
    async with AlertStore(path) as store:
        assert await store.load_switches() == {}
        await store.save_switch("dock", False, now_ms=10)
        await store.save_switch("gate", True, now_ms=10)
        await store.save_switch("dock", True, now_ms=20)
    async with AlertStore(path) as reopened:
        assert await reopened.load_switches() == {"dock": True, "gate": True}


async def test_read_only_reads_and_refuses_writes(path: str) -> None:
    async with AlertStore(path) as store:
        await store.record("r", "s", AlertState(updated_ms=1),
                           [evidence_for("r", "s", Transition(Kind.FIRING, True, 1, 1))])
    async with AlertStore(path, read_only=True) as reader:
        assert [e.rule for e in await reader.events()] == ["r"]
        with pytest.raises(StoreError, match="read-only"):
            await reader.forget("r")


async def test_read_only_never_creates_a_sqlite_file(sqlite_path: Path) -> None:
    reader = AlertStore(sqlite_path, read_only=True)
    with pytest.raises(StoreError, match="unable to open"):
        await reader.events()
    await reader.close()
    assert not os.path.exists(sqlite_path)  # noqa: ASYNC240  (one stat)


async def test_postgres_connections_killed_under_the_store_are_replaced(
        postgres_url: str) -> None:
    """As after a PostgreSQL restart: the pool's connections die; the next call reconnects."""
    async with AlertStore(postgres_url) as store:
        await store.record("r", "s", AlertState(updated_ms=1))

        async def kill_others(conn: object) -> int:
            result = await conn.exec_driver_sql(  # type: ignore[attr-defined]
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return int(result.scalar_one())
        other = AlertStore(postgres_url)
        try:
            assert await other.db.run(kill_others) >= 1  # the first store's pooled connection
        finally:
            await other.close()
        await store.record("r", "s", AlertState(updated_ms=2))
        assert await store.load_state("r", "s") == AlertState(updated_ms=2)
