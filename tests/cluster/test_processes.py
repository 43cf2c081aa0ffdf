"""Three real `watcher run` processes sharing six cameras through one PostgreSQL database.

Each test gets a fresh database. The cameras' scripted events follow the wall
clock (``testsrc ... wall=1``), so whichever instance publishes a camera sees
the same event at the same time, and a takeover in the middle of an event
continues it. A webhook receiver records every notification's
Idempotency-Key (``rule:stream:episode:kind:at_ms:action``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from support.cluster import (
    Cluster,
    Script,
    duplicated_keys,
    episodes,
    log_lines_since,
    running_cluster,
    scripted_events_notified,
    well_formed,
)
from support.postgres import fresh_database
from support.tcpproxy import TcpProxy

LEASE = 5.0


async def firing_camera(cluster: Cluster, timeout: float = 90) -> tuple[int, str]:
    """(node index, camera) of a camera whose alert is firing, on the node that owns it."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for index, node in enumerate(cluster.nodes):
            status = await node.status(cluster.http)
            for rule in (status or {}).get("rules", []):
                if rule["state"] == "firing":
                    return index, rule["streams"][0]
        await asyncio.sleep(0.3)
    raise AssertionError(f"no alert fired within {timeout:g} s\n{cluster.logs()}")


async def wait_for(check, timeout: float, what: str, cluster: Cluster) -> None:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} after {timeout:g} s\n{cluster.logs()}")
        await asyncio.sleep(0.3)


async def test_one_publisher_per_camera_and_kill_9_takeover_keeps_the_episode(
        tmp_path: Path) -> None:
    async with fresh_database("watcher_cluster_kill") as db, running_cluster(
            tmp_path, db, lease=LEASE) as cluster:
        await cluster.wait_all_published_once(timeout=120)
        owners = await cluster.publishers()
        assert {p[0] for p in owners.values()} == {n.name for n in cluster.nodes}, owners
        for _ in range(5):  # sampled again: still exactly one each
            await cluster.wait_all_published_once(timeout=30)

        victim_index, camera = await firing_camera(cluster)
        victim = cluster.nodes[victim_index]
        fired = [e for e in episodes(cluster.hook, camera) if e[1] == "firing"]
        await wait_for(lambda: any(e[1] == "firing" for e in episodes(cluster.hook, camera)),
                       30, f"no firing notification for {camera}", cluster)
        episode = max(e[0] for e in episodes(cluster.hook, camera) if e[1] == "firing")
        await victim.kill()
        took = await cluster.wait_all_published_once(timeout=LEASE + 30,
                                                     exclude={victim.name})
        assert took <= LEASE + 10, f"takeover took {took:.1f} s"
        await wait_for(lambda: (episode, "resolved") in episodes(cluster.hook, camera), 40,
                       f"episode {episode} of {camera} never resolved", cluster)
        seq = episodes(cluster.hook, camera)
        assert seq.count((episode, "firing")) == 1 and seq.count((episode, "resolved")) == 1
        assert len(fired) <= episode
        for name in cluster.camera_names:
            assert well_formed(episodes(cluster.hook, name)), (
                name, episodes(cluster.hook, name))
        assert duplicated_keys(cluster.hook) == {}
        assert "started group" in (cluster.nodes[(victim_index + 1) % 3].log_text()
                                   + cluster.nodes[(victim_index + 2) % 3].log_text())


async def test_a_frozen_instance_writes_and_sends_nothing_for_lost_groups_then_rejoins(
        tmp_path: Path) -> None:
    async with fresh_database("watcher_cluster_freeze") as db, running_cluster(
            tmp_path, db, lease=LEASE) as cluster:
        await cluster.wait_balanced(timeout=180)
        victim = cluster.nodes[1]
        mine = sorted(c for c, p in (await cluster.publishers()).items() if p == [victim.name])
        assert mine, cluster.logs()
        victim.signal(signal.SIGSTOP)
        took = await cluster.wait_all_published_once(timeout=LEASE + 30, exclude={victim.name})
        assert took <= LEASE + 10, f"takeover took {took:.1f} s"
        await asyncio.sleep(LEASE)  # the new owners go on working; the old one sleeps
        resumed = time.time()
        victim.signal(signal.SIGCONT)
        # it rejoins: the balance gives it cameras again, handed over cleanly
        await wait_for_async(lambda: _publishes(cluster, victim.name), 90,
                             f"{victim.name} never published again", cluster)
        await cluster.wait_all_published_once(timeout=60)
        after = log_lines_since(victim.log_text(), resumed)
        for camera in mine:
            lost = _first(after, f"lost group {camera} ")
            assert lost is not None, f"{victim.name} did not drop {camera}:\n" + "\n".join(after)
            regained = _first(after, f"owns group {camera} ")
            for index, line in enumerate(after):
                if f"alert motion-{camera} on {camera}:" in line or (
                        f"on {camera}" in line and "delivered" in line):
                    assert regained is not None and index > regained, (
                        f"{victim.name} worked on {camera} before owning it again: {line}")
        assert duplicated_keys(cluster.hook) == {}
        for name in cluster.camera_names:
            assert well_formed(episodes(cluster.hook, name)), (name,
                                                                episodes(cluster.hook, name))
        assert await _duplicate_events(db) == []


async def test_a_rolling_restart_loses_no_event_and_duplicates_no_key(tmp_path: Path) -> None:
    async with fresh_database("watcher_cluster_rolling") as db, running_cluster(
            tmp_path, db, lease=LEASE) as cluster:
        await cluster.wait_all_published_once(timeout=120)
        since = time.time()
        for node in cluster.nodes:
            code = await node.stop()
            assert code == 0, f"{node.name} exited {code}:\n{node.log_text()[-4000:]}"
            await node.start()
            await cluster.wait_all_published_once(timeout=90)
        await asyncio.sleep(cluster.script.period)
        until = time.time() - 12  # the events that could be notified by now
        await asyncio.sleep(8)
        missed = scripted_events_notified(cluster.hook, cluster.script, cluster.cameras,
                                          since, until)
        assert missed == {}, f"scripted events never notified: {missed}\n{cluster.logs()}"
        assert duplicated_keys(cluster.hook) == {}
        for name in cluster.camera_names:
            assert well_formed(episodes(cluster.hook, name)), (name,
                                                                episodes(cluster.hook, name))
        assert await _duplicate_events(db) == []


async def _publishes(cluster: Cluster, name: str) -> bool:
    return any(name in p for p in (await cluster.publishers()).values())


async def wait_for_async(check, timeout: float, what: str, cluster: Cluster) -> None:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} after {timeout:g} s\n{cluster.logs()}")
        await asyncio.sleep(0.5)


def _first(lines: list[str], needle: str) -> int | None:
    return next((i for i, line in enumerate(lines) if needle in line), None)


async def _duplicate_events(db: str) -> list[tuple[str, int, str, int]]:
    """(rule, episode, kind, count) recorded more than once (a stale writer's doing)."""
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT rule, episode, kind, count(*) AS n FROM alert_events"
            " WHERE kind <> 'repeat' GROUP BY rule, episode, kind HAVING count(*) > 1")
    finally:
        await conn.close()
    return [(r["rule"], r["episode"], r["kind"], r["n"]) for r in rows]


async def test_postgresql_down_for_15_s_changes_no_owner_and_notifies_every_event_once(
        tmp_path: Path) -> None:
    """The instances reach PostgreSQL through a proxy that the test cuts for 15 s (the
    server itself keeps serving other tests). Leases (30 s) outlast the outage."""
    script = Script(period=40, duration=20, stagger=7)
    async with fresh_database("watcher_cluster_pgdown") as db:
        parts = urlsplit(db)
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        proxied = urlunsplit((parts.scheme, f"{parts.username}@127.0.0.1:{proxy.port}"
                              if parts.username else f"127.0.0.1:{proxy.port}", parts.path,
                              parts.query, ""))
        try:
            async with running_cluster(tmp_path, proxied, lease=30, heartbeat=2,
                                       script=script) as cluster:
                await cluster.wait_all_published_once(timeout=120)
                before = await cluster.publishers()
                since = time.time()
                await asyncio.sleep(5)
                await proxy.cut()
                await asyncio.sleep(15)
                await proxy.restore()
                await wait_for_async(lambda: _store_answers(cluster), 60,
                                     "the instances did not reach the store again", cluster)
                assert await cluster.publishers() == before  # nobody lost a camera
                await cluster.wait_all_published_once(timeout=30)
                await asyncio.sleep(script.period)
                until = time.time() - 12
                await asyncio.sleep(8)
                missed = scripted_events_notified(cluster.hook, script, cluster.cameras,
                                                  since, until)
                assert missed == {}, f"events never notified: {missed}\n{cluster.logs()}"
                assert duplicated_keys(cluster.hook) == {}
                for name in cluster.camera_names:
                    assert well_formed(episodes(cluster.hook, name)), (
                        name, episodes(cluster.hook, name))
                assert await _duplicate_events(db) == []
                assert any("cannot reach the cluster store" in n.log_text()
                           for n in cluster.nodes)
        finally:
            await proxy.close()


async def _store_answers(cluster: Cluster) -> bool:
    for node in cluster.nodes:
        status = await node.status(cluster.http)
        if status is None or status["cluster"]["store_error"] is not None:
            return False
    return True
