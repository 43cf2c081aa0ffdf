"""Delivery claims: one claimer per delivery, lapsing claims, the same key on every attempt.

On both backends; the concurrency tests use several store instances (and
several processes) on one database, as several daemons would.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support.poll import eventually
from support.receivers import HttpReceiver

from watcher.actions.outbox import Outbox
from watcher.actions.webhook import WebhookAction, WebhookOptions
from watcher.clock import SystemClock
from watcher.engine.state import AlertState, Kind, Transition
from watcher.store import AlertEventRecord, AlertStore, DeliveryStatus

WORKER = Path(__file__).resolve().parents[1] / "support" / "claim_worker.py"


def firing(n: int, at_ms: int = 1_000) -> AlertEventRecord:
    return AlertEventRecord.from_transition(
        "dock", f"cam{n}", Transition(Kind.FIRING, True, at_ms, 1), answer={"n": n})


async def record(store: AlertStore, count: int, at_ms: int = 1_000,
                 actions: tuple[str, ...] = ("hook",)) -> list[int]:
    ids = []
    for n in range(count):
        ids += await store.record("dock", f"cam{n}", AlertState(updated_ms=at_ms),
                                  [firing(n, at_ms)], actions_for=lambda e: list(actions))
    return ids


@pytest.fixture
async def stores(state_location: str) -> AsyncIterator[tuple[AlertStore, AlertStore]]:
    a = await AlertStore(state_location, instance="a").open()
    b = await AlertStore(state_location, instance="b").open()
    yield a, b
    await a.close()
    await b.close()


async def test_only_one_instance_wins_a_claim(stores: tuple[AlertStore, AlertStore]) -> None:
    a, b = stores
    [event_id] = await record(a, 1)
    [d] = await a.deliveries_for_event(event_id)
    results = await asyncio.gather(a.mark_delivering(d.id, 2_000, claim_ms=1_000),
                                   b.mark_delivering(d.id, 2_000, claim_ms=1_000))
    assert sorted(results) == [False, True]
    [held] = await a.deliveries_for_event(event_id)
    winner, loser = (a, b) if held.claimed_by == "a" else (b, a)
    assert (held.status, held.attempts, held.claim_expires_ms) == ("delivering", 1, 3_000)
    # only the claimer may finish it
    assert not await loser.mark_sent(d.id, 2_500)
    assert not await loser.mark_retry(d.id, 9_000, "x", 2_500)
    assert await winner.mark_sent(d.id, 2_500)
    [done] = await a.deliveries_for_event(event_id)
    assert (done.status, done.claimed_by, done.sent_ms) == ("sent", winner.instance, 2_500)


async def test_a_lapsed_claim_is_taken_over_with_the_same_key(
        stores: tuple[AlertStore, AlertStore]) -> None:
    a, b = stores
    [event_id] = await record(a, 1)
    [d] = await a.deliveries_for_event(event_id)
    assert await a.mark_delivering(d.id, 2_000, claim_ms=1_000)  # then "a" freezes or dies
    assert await b.due_deliveries(2_999) == []
    assert await b.next_due_ms() == 3_000  # when the claim lapses
    assert not await b.mark_delivering(d.id, 2_999, claim_ms=1_000)
    [due] = await b.due_deliveries(3_000)
    assert (due.id, due.status, due.claimed_by) == (d.id, "delivering", "a")
    assert await b.mark_delivering(d.id, 3_000, claim_ms=1_000)
    assert not await a.mark_sent(d.id, 3_100)  # "a" wakes up: its claim is gone
    assert await b.mark_sent(d.id, 3_200)
    [done] = await b.deliveries_for_event(event_id)
    assert (done.status, done.attempts, done.claimed_by) == ("sent", 2, "b")
    assert done.idempotency_key == d.idempotency_key == f"{firing(0).event_key}:hook"


async def test_a_lapsed_claim_can_be_dead_lettered_by_another(
        stores: tuple[AlertStore, AlertStore]) -> None:
    a, b = stores
    [event_id] = await record(a, 1)
    [d] = await a.deliveries_for_event(event_id)
    assert await a.mark_delivering(d.id, 2_000, claim_ms=1_000)
    assert not await b.mark_dead(d.id, "expired", 2_500)  # still a's
    assert await b.mark_dead(d.id, "expired", 3_000)
    [dead] = await a.deliveries_for_event(event_id)
    assert (dead.status, dead.last_error) == (DeliveryStatus.DEAD, "expired")


async def test_reset_in_flight_takes_back_only_what_no_live_instance_holds(
        state_location: str) -> None:
    async with AlertStore(state_location, instance="a") as a, \
            AlertStore(state_location, instance="b") as b:
        ids = await record(a, 3)
        first, second, third = [(await a.deliveries_for_event(i))[0].id for i in ids]
        assert await a.mark_delivering(first, 1_000, claim_ms=60_000)    # a, alive
        assert await b.mark_delivering(second, 1_000, claim_ms=1_000)    # b, lapsed at 2 s
        assert await b.mark_delivering(third, 1_000, claim_ms=60_000)    # b, restarting
        reset = await b.reset_in_flight(5_000)
        states = {d.id: d.status for ds in (await a.deliveries_for_events(ids)).values()
                  for d in ds}
    if b.shared:  # PostgreSQL: a's live claim stays
        assert reset == 2 and states[first] == "delivering"
    else:         # SQLite: one daemon per file, so nothing else can be delivering
        assert reset == 3 and states[first] == "pending"
    assert states[second] == states[third] == "pending"


async def test_two_outboxes_on_one_database_send_each_key_once(state_location: str) -> None:
    async with AlertStore(state_location, instance="a") as a, \
            AlertStore(state_location, instance="b") as b, \
            httpx.AsyncClient() as http:
        with HttpReceiver() as receiver:
            receiver.delay = 0.01
            options = WebhookOptions.model_validate({"type": "webhook", "url": receiver.url()})
            ids = await record(a, 24, at_ms=SystemClock().now_ms())
            outboxes = [Outbox(store, {"hook": WebhookAction("hook", options, http=http)},
                               SystemClock()) for store in (a, b)]
            for outbox in outboxes:
                outbox.start()
            try:
                async def all_sent() -> bool:
                    found = await a.deliveries_for_events(ids)
                    return all(d.status == "sent" for ds in found.values() for d in ds)
                await eventually(all_sent, 60)
            finally:
                for outbox in outboxes:
                    await outbox.stop()
            keys = Counter(r.headers["idempotency-key"] for r in receiver.requests)
        delivered = [d for ds in (await a.deliveries_for_events(ids)).values() for d in ds]
    assert len(delivered) == 24
    assert keys == Counter(d.idempotency_key for d in delivered)  # each exactly once
    assert all(d.attempts == 1 and d.claimed_by in ("a", "b") for d in delivered)


async def test_claimers_in_three_processes_split_the_work(state_location: str) -> None:
    async with AlertStore(state_location, instance="setup") as store:
        ids = await record(store, 60, actions=("hook", "mail"))
        expected = {d.id for ds in (await store.deliveries_for_events(ids)).values()
                    for d in ds}
    workers = [await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), state_location, f"worker{n}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for n in range(3)]
    outputs = await asyncio.gather(*(w.communicate() for w in workers))
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
    claimed = [json.loads(out) for out, _ in outputs]
    every = [i for ids_ in claimed for i in ids_]
    assert len(every) == len(set(every)) == len(expected) == 120  # nobody claimed one twice
    assert set(every) == expected
    async with AlertStore(state_location) as store:
        done = [d for ds in (await store.deliveries_for_events(ids)).values() for d in ds]
    assert {(d.status, d.attempts) for d in done} == {("sent", 1)}
    assert {d.claimed_by for d in done} <= {"worker0", "worker1", "worker2"}


async def test_the_claims_of_a_dead_instance_are_released_at_once(
        stores: tuple[AlertStore, AlertStore]) -> None:
    a, b = stores
    ids = await record(a, 2)
    first, second = [(await a.deliveries_for_event(i))[0].id for i in ids]
    assert await a.mark_delivering(first, 1_000, claim_ms=600_000)  # a dies holding it
    assert await b.mark_delivering(second, 1_000, claim_ms=600_000)
    assert await b.release_claims(["a", "nobody"], 2_000) == 1
    [due] = await b.due_deliveries(2_000)
    assert (due.id, due.status, due.claimed_by) == (first, "pending", None)
    assert await b.mark_delivering(first, 2_000)
    assert not await a.mark_sent(first, 2_100)
    assert await b.release_claims([], 2_000) == 0
