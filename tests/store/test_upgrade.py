"""Versioned schema: a state file of the SQLite-only store upgrades in place, keeping
everything; revisions apply once, under a lock; an outdated schema can be refused."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from support.legacy_state import JPEG, write_state_file

from watcher.engine.state import AlertState, Kind, Status
from watcher.store import AlertStore, DeliveryStatus, SchemaError, StateLockedError, migrate
from watcher.store.database import Database
from watcher.store.lock import daemon_store
from watcher.store.migrate import MANAGED_USER_VERSION, head


async def test_a_version_3_file_upgrades_keeping_everything(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    write_state_file(path, version=3)
    async with AlertStore(path) as store:
        assert await store.load_switches() == {"gate": False}
        state = await store.load_state("dock", "cam1")
        assert state is not None and (state.status, state.episode) == (Status.FIRING, 1)
        [event] = await store.events()
        assert (event.id, event.kind, event.snapshot, event.answer, event.usage) == (
            1, Kind.FIRING, JPEG, {"answer": True}, {"total_tokens": 12})
        hook, mail = await store.deliveries_for_event(1)
        assert (hook.status, mail.status) == (DeliveryStatus.SENT, DeliveryStatus.DELIVERING)
        assert mail.claimed_by is None and mail.idempotency_key.endswith(":mail")
        # the crash's in-flight delivery is taken back and claimed again, same key
        assert await store.reset_in_flight(2_000) == 1
        assert await store.mark_delivering(mail.id, 2_000)
        assert await store.mark_sent(mail.id, 2_100)
        # and the upgraded file takes new work: ids continue after the old ones
        ids = await store.record("dock", "cam1", AlertState(status=Status.RESOLVED, episode=1,
                                                             updated_ms=3_000))
        assert ids == []
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == MANAGED_USER_VERSION
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head()


@pytest.mark.parametrize("version", [1, 2])
async def test_older_files_get_the_newer_tables(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite3"
    write_state_file(path, version=version)
    async with AlertStore(path) as store:
        assert [e.event_key for e in await store.events()] == ["dock:cam1:1:firing:1000"]
        assert len(await store.deliveries_for_event(1)) == (0 if version == 1 else 2)
        assert await store.load_switches() == {}
        await store.save_switch("gate", True)


async def test_refusing_an_outdated_schema_names_the_upgrade_command(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    write_state_file(path)
    refusing = AlertStore(path, upgrade=False)
    with pytest.raises(SchemaError, match=r"revision 0003.*watcher db upgrade -c FILE"):
        await refusing.open()
    await refusing.close()
    db = Database(path)
    try:
        assert (await migrate.status(db)).current == "0003"
        assert await migrate.upgrade(db) == ("0003", head())
        assert await migrate.upgrade(db) == (head(), head())  # nothing left to do
        assert (await migrate.status(db)).up_to_date
    finally:
        await db.close()


async def test_concurrent_upgrades_apply_each_revision_once(state_location: str) -> None:
    stores = [AlertStore(state_location) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].record("r", "s", AlertState(updated_ms=1))
        assert [await s.load_all_states() for s in stores[1:]] == [
            {("r", "s"): AlertState(updated_ms=1)}] * 2
    finally:
        for s in stores:
            await s.close()


async def test_read_only_refuses_an_outdated_file_and_leaves_it_as_it_was(
        tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    write_state_file(path, version=3)
    before = path.read_bytes()
    reader = AlertStore(path, read_only=True)
    with pytest.raises(SchemaError, match="watcher db upgrade"):
        await reader.events()
    await reader.close()
    assert path.read_bytes() == before


async def test_the_daemon_store_upgrades_an_old_file_and_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    write_state_file(path)
    async with daemon_store(path) as store:
        assert (await migrate.status(store.db)).up_to_date
        with pytest.raises(StateLockedError) as refused:
            async with daemon_store(path):
                pass
        assert (refused.value.path, refused.value.pid) == (str(path), os.getpid())
        assert f"state file {path} is in use by another watcher (pid {os.getpid()})" in str(
            refused.value)
        assert await store.load_switches() == {"gate": False}
    async with daemon_store(path) as again:  # released with the first
        assert [e.rule for e in await again.events()] == ["dock"]
