"""Durable, at-least-once delivery: the store's outbox rows and the Outbox delivering them.

Everything is real (SQLite in tmp_path, the runner's recording path, the CLI)
except the channels: the actions here are small Action subclasses that record
calls, fail on cue or hang, since the real channels are tested against real
servers in their own tests. Time is a ManualClock moved only by the outbox's
injected ``sleep`` (it jumps straight to the next due time), so nothing waits
and every delay is exact.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from support.poll import eventually

from watcher.actions.base import Action, DeliveryError
from watcher.actions.options import ActionOptionsBase
from watcher.actions.outbox import Outbox
from watcher.actions.sending import retry_delay_s
from watcher.cli import main
from watcher.clock import ManualClock
from watcher.config import WatcherConfig
from watcher.engine.alertevents import delivery_targets
from watcher.engine.evaluation import Evaluation
from watcher.engine.rules import RuleConfig
from watcher.engine.runner import RuleRunner
from watcher.engine.state import AlertState, Kind, Transition
from watcher.engine.store import (
    AlertEventRecord,
    AlertStore,
    DeliveryStatus,
    DuplicateEventError,
)
from watcher.tools import list_alerts

T0 = 1_700_000_000_000


class FakeTime:
    """The outbox's clock and sleep: a sleep moves the clock by exactly its length.

    ``freeze()`` makes sleeps wait instead, so the clock stands still while
    the test looks at what happened at one instant.
    """

    def __init__(self) -> None:
        self.clock = ManualClock(T0)
        self.sleeps: list[float] = []
        self._thawed = asyncio.Event()
        self._thawed.set()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await self._thawed.wait()
        self.clock.advance(seconds)
        await asyncio.sleep(0)

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()


@dataclass
class Options:
    """What the channels' option models share (ActionOptionsBase)."""

    send_resolved: bool = False
    rate_limit: Any = None
    max_age: float = 86_400.0


@dataclass
class Call:
    at_ms: int
    key: str
    event_ids: list[int]
    summary: bool = False


class Recording(Action):
    """A channel that records every attempt; ``script`` says how each attempt ends
    (an exception to raise, or None to succeed; succeeds once the script runs out);
    with ``gate`` set, each attempt waits until it is opened."""

    type = "recording"

    def __init__(self, name: str, clock: ManualClock, *, script: list[Exception | None] | None
                 = None, fail_forever: Exception | None = None, gate: asyncio.Event | None
                 = None, options: Any = None, **fields: Any) -> None:
        super().__init__(name, options if options is not None else Options(**fields))
        self.clock = clock
        self.script = list(script or [])
        self.fail_forever = fail_forever
        self.gate = gate
        self.calls: list[Call] = []
        self.delivered: list[Call] = []

    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None:
        await self._attempt(Call(self.clock.now_ms(), idempotency_key, [event.id or 0]))

    async def send_summary(self, events: list[AlertEventRecord], idempotency_key: str) -> None:
        await self._attempt(Call(self.clock.now_ms(), idempotency_key,
                                 [e.id or 0 for e in events], summary=True))

    async def _attempt(self, call: Call) -> None:
        self.calls.append(call)
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            error = self.script.pop(0)
            if error is not None:
                raise error
        elif self.fail_forever is not None:
            raise self.fail_forever
        self.delivered.append(call)


@dataclass
class Env:
    store: AlertStore
    time: FakeTime
    path: Path
    outboxes: list[Outbox] = field(default_factory=list)
    _episodes: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def clock(self) -> ManualClock:
        return self.time.clock

    async def record(self, actions: list[str], *, kind: Kind = Kind.FIRING,
                     notify: bool = True, rule: str = "dock") -> AlertEventRecord:
        """Store one event with a delivery to each of ``actions`` (as the runner does)."""
        t = Transition(kind, notify, self.clock.now_ms(), next(self._episodes))
        event = AlertEventRecord.from_transition(rule, "cam1", t, severity="warning",
                                                 answer={"person": True})
        [event_id] = await self.store.record(rule, "cam1", AlertState(), [event],
                                             actions_for=lambda e: actions)
        for outbox in self.outboxes:
            outbox.wake()  # as the runner's on_recorded does
        return replace(event, id=event_id)

    def outbox(self, *actions: Action, **kwargs: Any) -> Outbox:
        kwargs.setdefault("rng", lambda: 0.5)  # no jitter: delays are exact
        outbox = Outbox(self.store, {a.name: a for a in actions}, self.clock,
                        sleep=self.time.sleep, **kwargs)
        self.outboxes.append(outbox)
        outbox.start()
        return outbox

    async def status(self, event: AlertEventRecord) -> dict[str, str]:
        return {d.action: str(d.status)
                for d in await self.store.deliveries_for_event(event.id or 0)}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    path = tmp_path / "state.sqlite3"
    e = Env(AlertStore(path), FakeTime(), path)
    yield e
    e.time.thaw()
    for outbox in e.outboxes:
        await outbox.stop(grace_s=0)
    await e.store.close()


until = functools.partial(eventually, interval=0.002)
"""The outbox moves in milliseconds: poll often."""


async def settled(env: Env, event: AlertEventRecord) -> bool:
    """Every delivery of ``event`` is finished (sent, summarized or dead)."""
    final = {"sent", "summarized", "dead"}
    return all(s in final for s in (await env.status(event)).values())


# -- the store: deliveries are written with their event ---------------------

async def test_deliveries_are_written_in_the_events_transaction(env: Env) -> None:
    event = await env.record(["hook", "mail", "hook"])
    hook, mail = await env.store.deliveries_for_event(event.id or 0)
    assert (hook.action, mail.action) == ("hook", "mail")  # a name given twice counts once
    assert hook.idempotency_key == f"{event.event_key}:hook"
    assert (hook.status, hook.attempts, hook.next_attempt_ms, hook.created_ms) == (
        DeliveryStatus.PENDING, 0, event.created_ms, event.created_ms)

    # A step that fails (here: its second event is a duplicate) writes nothing at all.
    env.clock.advance(5)
    fresh = AlertEventRecord.from_transition(
        "dock", "cam1", Transition(Kind.REPEAT, True, env.clock.now_ms(), 1))
    state = AlertState(last_notified_ms=env.clock.now_ms())
    with pytest.raises(DuplicateEventError):
        await env.store.record("dock", "cam1", state, [fresh, replace(event, id=None)],
                               actions_for=lambda e: ["hook"])
    assert [e.event_key for e in await env.store.events()] == [event.event_key]
    assert await env.store.load_state("dock", "cam1") == AlertState()
    assert await env.store.delivery_counts() == {"hook": {"pending": 1},
                                                 "mail": {"pending": 1}}


async def test_suppressed_events_get_no_deliveries(env: Env) -> None:
    asked: list[str] = []

    def actions_for(event: AlertEventRecord) -> list[str]:
        asked.append(event.event_key)
        return ["hook"]

    t = Transition(Kind.FIRING, False, env.clock.now_ms(), 1)
    event = AlertEventRecord.from_transition("dock", "cam1", t)
    [event_id] = await env.store.record("dock", "cam1", AlertState(), [event],
                                        actions_for=actions_for)
    assert asked == [] and await env.store.deliveries_for_event(event_id) == []


async def test_store_delivery_transitions_and_in_flight_reset(env: Env) -> None:
    event = await env.record(["hook"])
    [d] = await env.store.due_deliveries(env.clock.now_ms(), 10)
    assert await env.store.due_deliveries(env.clock.now_ms(), 10, exclude_actions=["hook"]) == []
    assert await env.store.due_deliveries(env.clock.now_ms() - 1, 10) == []
    assert await env.store.mark_sent(d.id, T0) is False  # only from delivering
    assert await env.store.mark_delivering(d.id, T0) is True
    assert await env.store.mark_delivering(d.id, T0) is False  # already taken
    assert await env.store.mark_retry(d.id, T0 + 9000, "x" * 5000, T0) is True
    [again] = await env.store.deliveries_for_event(event.id or 0)
    assert (again.status, again.attempts, again.next_attempt_ms) == ("pending", 1, T0 + 9000)
    assert len(again.last_error or "") == 500  # bounded
    assert await env.store.next_due_ms() == T0 + 9000
    assert await env.store.next_due_ms(exclude_actions=["hook"]) is None
    await env.store.mark_delivering(d.id, T0 + 9000)
    assert await env.store.reset_in_flight(T0 + 9500) == 1
    [reset] = await env.store.deliveries_for_event(event.id or 0)
    assert (reset.status, reset.attempts, reset.updated_ms) == ("pending", 2, T0 + 9500)


# -- delivering ------------------------------------------------------------

async def test_a_delivery_is_sent_once_with_its_idempotency_key(env: Env) -> None:
    hook = Recording("hook", env.clock)
    outbox = env.outbox(hook)
    event = await env.record(["hook"])
    outbox.wake()
    await until(lambda: settled(env, event))
    assert [(c.key, c.event_ids) for c in hook.calls] == [
        (f"{event.event_key}:hook", [event.id])]
    [d] = await env.store.deliveries_for_event(event.id or 0)
    assert (d.status, d.attempts, d.sent_ms) == ("sent", 1, T0)
    status = await outbox.status()
    assert status["hook"]["sent"] == 1 and status["hook"]["pending"] == 0


async def test_a_failing_receiver_is_retried_with_growing_delays(env: Env) -> None:
    hook = Recording("hook", env.clock, script=[DeliveryError("503 from receiver")] * 3)
    env.outbox(hook)
    event = await env.record(["hook"])
    await until(lambda: settled(env, event))
    assert len(hook.calls) == 4 and len({c.key for c in hook.calls}) == 1  # same key each time
    gaps = [b.at_ms - a.at_ms for a, b in itertools.pairwise(hook.calls)]
    assert gaps == [2000, 4000, 8000]
    [d] = await env.store.deliveries_for_event(event.id or 0)
    assert (d.status, d.attempts, d.last_error) == ("sent", 4, "503 from receiver")
    stats = env.outboxes[0].stats["hook"]
    assert (stats.sent, stats.failed, stats.retries, stats.dead) == (1, 3, 3, 0)


def test_retry_delays_double_from_2s_to_10min_with_jitter() -> None:
    assert [retry_delay_s(n, lambda: 0.5) for n in (1, 2, 3, 9, 10, 30)] == [
        2, 4, 8, 512, 600, 600]
    assert retry_delay_s(1, lambda: 0.0) == pytest.approx(1.6)
    assert retry_delay_s(1, lambda: 1.0) == pytest.approx(2.4)
    assert retry_delay_s(1, lambda: 0.5, retry_after=30) == 30
    assert retry_delay_s(12, lambda: 0.5, retry_after=30) == 600


async def test_retry_after_is_honoured_for_the_whole_action(env: Env) -> None:
    hook = Recording("hook", env.clock, script=[DeliveryError("429", retry_after=30)])
    first = await env.record(["hook"])
    second = await env.record(["hook"])
    env.outbox(hook)
    await until(lambda: settled(env, first))
    await until(lambda: settled(env, second))
    assert hook.calls[0].at_ms == T0
    assert all(c.at_ms >= T0 + 30_000 for c in hook.calls[1:])  # nothing before Retry-After
    assert sorted(c.event_ids[0] for c in hook.delivered) == [first.id, second.id]


async def test_a_permanent_error_is_dead_at_once(env: Env) -> None:
    mail = Recording("mail", env.clock,
                     script=[DeliveryError("550 no such mailbox", permanent=True)])
    env.outbox(mail)
    event = await env.record(["mail"])
    await until(lambda: settled(env, event))
    [d] = await env.store.deliveries_for_event(event.id or 0)
    assert (d.status, d.attempts, d.last_error) == ("dead", 1, "550 no such mailbox")
    assert len(mail.calls) == 1 and env.time.sleeps == []
    assert env.outboxes[0].stats["mail"].dead == 1


async def test_retries_stop_at_max_age(env: Env) -> None:
    hook = Recording("hook", env.clock, fail_forever=DeliveryError("connection refused"),
                     max_age=60)
    env.outbox(hook)
    event = await env.record(["hook"])
    await until(lambda: settled(env, event))
    # Attempts at 0, 2, 6, 14 and 30 s; the next would be at 62 s, past max_age.
    assert [c.at_ms - T0 for c in hook.calls] == [0, 2000, 6000, 14_000, 30_000]
    [d] = await env.store.deliveries_for_event(event.id or 0)
    assert d.status == "dead" and d.last_error is not None
    assert d.last_error.startswith("connection refused") and "max_age" in d.last_error


async def test_a_delivery_older_than_max_age_is_dead_without_an_attempt(env: Env) -> None:
    event = await env.record(["hook"])
    env.clock.advance(3601)
    hook = Recording("hook", env.clock, max_age=3600)
    env.outbox(hook)
    await until(lambda: settled(env, event))
    [d] = await env.store.deliveries_for_event(event.id or 0)
    assert d.status == "dead" and "expired" in (d.last_error or "") and hook.calls == []


async def test_an_unknown_action_is_dead_and_others_still_delivered(env: Env) -> None:
    hook = Recording("hook", env.clock)
    env.outbox(hook)
    event = await env.record(["hook", "removed"])
    await until(lambda: settled(env, event))
    sent, gone = sorted(await env.store.deliveries_for_event(event.id or 0),
                        key=lambda d: d.action)
    assert (gone.action, gone.status, sent.status) == ("removed", "dead", "sent")
    assert "unknown action 'removed'" in (gone.last_error or "")


async def test_a_slow_or_failing_action_does_not_delay_another(env: Env) -> None:
    env.time.freeze()  # the clock stands still: every delivery below happens at T0
    gate = asyncio.Event()
    slow = Recording("slow", env.clock, gate=gate)
    broken = Recording("broken", env.clock, fail_forever=DeliveryError("503"))
    fast = Recording("fast", env.clock)
    env.outbox(slow, broken, fast)
    events = [await env.record(["slow", "broken", "fast"]) for _ in range(3)]
    await until(lambda: len(fast.delivered) == 3)
    await until(lambda: len(broken.calls) == 3)
    assert [c.at_ms for c in fast.delivered] == [T0] * 3
    assert len(slow.calls) == 1 and slow.delivered == []  # still on its first one
    assert (await env.status(events[0]))["slow"] == "delivering"

    gate.set()
    await until(lambda: len(slow.delivered) == 3)
    assert [c.event_ids for c in slow.delivered] == [[e.id] for e in events]
    assert {(await env.status(e))["broken"] for e in events} == {"pending"}


async def test_a_delivery_in_flight_at_a_crash_is_sent_after_the_restart(env: Env) -> None:
    hung = Recording("hook", env.clock, gate=asyncio.Event())
    outbox = env.outbox(hung)
    event = await env.record(["hook"])
    await until(lambda: len(hung.calls) == 1)
    await outbox.stop(grace_s=0)  # the process dies mid-attempt: nothing is marked
    await env.store.close()
    with sqlite3.connect(env.path) as raw:
        assert raw.execute("SELECT status, attempts FROM deliveries").fetchall() == [
            ("delivering", 1)]

    env.store = AlertStore(env.path)
    env.clock.advance(30)
    hook = Recording("hook", env.clock)
    env.outbox(hook)
    await until(lambda: settled(env, event))
    [d] = await env.store.deliveries_for_event(event.id or 0)
    assert (d.status, d.attempts) == ("sent", 2)
    assert [c.key for c in hook.calls] == [hung.calls[0].key]  # the same Idempotency-Key


async def test_over_the_rate_limit_the_held_go_out_as_one_summary(env: Env) -> None:
    # The channels' own options model, with its shorthand: 3 messages per minute.
    limited = Recording("limited", env.clock,
                        options=ActionOptionsBase.model_validate({"rate_limit": "3/1m"}))
    free = Recording("free", env.clock)
    events = [await env.record(["limited", "free"]) for _ in range(10)]
    outbox = env.outbox(limited, free)
    await until(lambda: len(free.delivered) == 10)
    await until(lambda: settled(env, events[-1]))
    ids = [e.id for e in events]
    assert [(c.at_ms, c.event_ids, c.summary) for c in limited.delivered] == [
        (T0, [ids[0]], False), (T0, [ids[1]], False), (T0, [ids[2]], False),
        (T0 + 60_000, ids[3:], True)]
    assert limited.delivered[-1].key == f"summary:limited:{ids[3]}-{ids[9]}"
    assert not any(c.summary for c in free.delivered)  # the limit is per action
    counts = await env.store.delivery_counts()
    assert counts == {"free": {"sent": 10}, "limited": {"sent": 3, "summarized": 7}}
    for e in events[3:]:
        [d] = [d for d in await env.store.deliveries_for_event(e.id or 0)
               if d.action == "limited"]
        assert d.summary_id == limited.delivered[-1].key
    stats = outbox.stats["limited"]
    assert (stats.sent, stats.summaries, stats.summarized) == (3, 1, 7)
    assert stats.sent + stats.summarized == 10


async def test_a_single_held_delivery_is_sent_normally(env: Env) -> None:
    limited = Recording("limited", env.clock, rate_limit={"count": 1, "per": "1m"})
    env.time.freeze()
    env.outbox(limited)
    first = await env.record(["limited"])
    await until(lambda: settled(env, first))
    env.clock.advance(10)
    second = await env.record(["limited"])  # while the window is full: held
    await until(lambda: env.time.sleeps[-1:] == [50], timeout=2)  # waiting for the window
    env.time.thaw()
    await until(lambda: settled(env, second))
    assert [(c.at_ms, c.summary) for c in limited.delivered] == [
        (T0, False), (T0 + 60_000, False)]


# -- who gets what: the runner ---------------------------------------------

def test_delivery_targets() -> None:
    actions = {"hook": Options(send_resolved=True), "mail": Options()}
    rule_actions = ["hook", "mail", "removed"]

    def event(kind: Kind, notify: bool = True) -> AlertEventRecord:
        return AlertEventRecord.from_transition("r", "s", Transition(kind, notify, T0, 1))

    assert delivery_targets(rule_actions, event(Kind.FIRING), actions) == rule_actions
    assert delivery_targets(rule_actions, event(Kind.REPEAT), actions) == rule_actions
    assert delivery_targets(rule_actions, event(Kind.RESOLVED), actions) == ["hook"]
    assert delivery_targets(rule_actions, event(Kind.FIRING, False), actions) == []


async def test_the_runner_records_deliveries_and_wakes_the_outbox(env: Env) -> None:
    rule = RuleConfig.model_validate({
        "name": "dock", "stream": "cam1", "every": "5s", "prompt": "anyone?",
        "schema": {"person": "boolean"}, "actions": ["hook", "mail"], "cooldown": "1h"})
    hook = Recording("hook", env.clock, send_resolved=True)
    mail = Recording("mail", env.clock)
    wakes: list[int] = []
    runner = RuleRunner(rule, default_model="m", client=None,  # type: ignore[arg-type]
                        streams={}, store=env.store, clock=env.clock,
                        actions={"hook": hook, "mail": mail},
                        on_recorded=lambda: wakes.append(env.clock.now_ms()))

    async def verdict(matched: bool) -> list[int]:
        env.clock.advance(5)
        result = await runner._finish(Evaluation("dock", "cam1", "answered"), matched, [], [],
                                      True)
        return result.event_ids

    [fired] = await verdict(True)
    [resolved] = await verdict(False)
    [suppressed] = await verdict(True)  # within the cooldown: recorded, not notified
    [quiet] = await verdict(False)
    assert len(wakes) == 2
    byid = await env.store.deliveries_for_events([fired, resolved, suppressed, quiet])
    assert {i: [d.action for d in ds] for i, ds in byid.items()} == {
        fired: ["hook", "mail"], resolved: ["hook"]}

    env.outbox(hook, mail)
    await until(lambda: len(hook.delivered) == 2 and len(mail.delivered) == 1)
    assert [c.event_ids for c in hook.delivered] == [[fired], [resolved]]


# -- `watcher alerts` ------------------------------------------------------

async def alerts_fixture(env: Env) -> tuple[AlertEventRecord, AlertEventRecord]:
    """Two events: one sent to hook and dead for mail, one being retried for slack."""
    delivered = await env.record(["hook", "mail"])
    retrying = await env.record(["slack"])
    hook, mail = await env.store.deliveries_for_event(delivered.id or 0)
    [slack] = await env.store.deliveries_for_event(retrying.id or 0)
    for d in (hook, mail, slack):
        await env.store.mark_delivering(d.id, T0)
    await env.store.mark_sent(hook.id, T0)
    await env.store.mark_dead(mail.id, "550 5.1.1 mailbox unavailable", T0)
    await env.store.mark_retry(slack.id, T0 + 40_000, "503 Service Unavailable", T0)
    await env.store.mark_delivering(slack.id, T0 + 40_000)
    await env.store.mark_retry(slack.id, T0 + 80_000, "503 Service Unavailable", T0 + 40_000)
    return delivered, retrying


async def test_alerts_shows_delivery_states(env: Env) -> None:
    delivered, retrying = await alerts_fixture(env)
    config = WatcherConfig.model_validate({"state": {"path": str(env.path)}})
    out = StringIO()
    assert await list_alerts(config, limit=10, rule=None, as_json=False, out=out,
                             now_ms=T0 + 40_000) == 0
    text = out.getvalue()
    assert "-> hook: sent" in text
    assert "-> mail: dead (550 5.1.1 mailbox unavailable)" in text
    assert "-> slack: pending (attempt 3, next in 40s): 503 Service Unavailable" in text

    out = StringIO()
    await list_alerts(config, limit=10, rule=None, as_json=True, out=out, now_ms=T0)
    rows = {row["id"]: row for row in json.loads(out.getvalue())}
    assert [(d["action"], d["status"], d["attempts"], d["last_error"])
            for d in rows[delivered.id]["deliveries"]] == [
        ("hook", "sent", 1, None), ("mail", "dead", 1, "550 5.1.1 mailbox unavailable")]
    [slack] = rows[retrying.id]["deliveries"]
    assert (slack["status"], slack["attempts"], slack["next_attempt_ms"]) == (
        "pending", 2, T0 + 80_000)
    assert slack["idempotency_key"] == f"{retrying.event_key}:slack"


async def test_alerts_dead_lists_only_dead_letters(
        env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    delivered, _ = await alerts_fixture(env)
    await env.store.close()
    (tmp_path / "watcher.yaml").write_text(f"state:\n  path: {env.path}\n")
    assert await asyncio.to_thread(main, ["alerts", "-c", str(tmp_path / "watcher.yaml"),
                                          "--dead", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in rows] == [delivered.id]
    assert await asyncio.to_thread(main, ["alerts", "-c", str(tmp_path / "watcher.yaml"),
                                          "--dead"]) == 0
    text = capsys.readouterr().out
    assert "mail: dead (550" in text and "slack" not in text
    env.store = AlertStore(env.path)  # for the fixture's teardown


# -- store failures and unknown outcomes -----------------------------------------

async def all_settled(env: Env, events: list[AlertEventRecord]) -> bool:
    return all([await settled(env, e) for e in events])


def fail_first(store: AlertStore, method: str, times: int) -> list[str]:
    """Make ``store.<method>`` raise a store error its first ``times`` calls (as a locked or
    full disk would); returns a log of the calls ("failed" / "ok")."""
    real = getattr(store, method)
    calls: list[str] = []

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if calls.count("failed") < times:
            calls.append("failed")
            raise sqlite3.OperationalError("database is locked")
        calls.append("ok")
        return await real(*args, **kwargs)

    setattr(store, method, flaky)
    return calls


async def test_a_store_error_marking_a_delivery_sent_is_retried_in_process(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    marks = fail_first(env.store, "mark_sent", times=3)
    hook = Recording("hook", env.clock)
    env.outbox(hook)
    event = await env.record(["hook"])
    await until(lambda: settled(env, event))
    assert marks == ["failed", "failed", "failed", "ok"]
    [d] = await env.store.deliveries_for_event(event.id or 0)
    assert (d.status, d.attempts) == ("sent", 1)  # no restart needed, and sent only once
    assert [c.key for c in hook.calls] == [d.idempotency_key]
    assert env.time.sleeps[:3] == [0.5, 1.0, 2.0]
    assert "storing the delivery of event" in caplog.text


async def test_a_store_error_scheduling_a_retry_is_retried_in_process(env: Env) -> None:
    marks = fail_first(env.store, "mark_retry", times=1)
    hook = Recording("hook", env.clock, script=[DeliveryError("503 from the receiver")])
    env.outbox(hook)
    event = await env.record(["hook"])
    await until(lambda: settled(env, event))
    assert marks == ["failed", "ok"]
    [d] = await env.store.deliveries_for_event(event.id or 0)
    assert (d.status, d.attempts) == ("sent", 2)
    assert [c.key for c in hook.calls] == [d.idempotency_key] * 2


async def test_a_summary_cut_short_by_a_crash_is_sent_again_under_its_own_key(
        env: Env) -> None:
    gate = asyncio.Event()
    limited = Recording("limited", env.clock, rate_limit={"count": 1, "per": "1m"}, gate=gate)
    events = [await env.record(["limited"]) for _ in range(4)]
    outbox = env.outbox(limited)
    await until(lambda: len(limited.calls) == 1)
    env.time.freeze()  # the minute until the window reopens passes only when thawed
    gate.set()  # the first goes out on its own; the other three are held
    await until(lambda: settled(env, events[0]))
    gate.clear()
    env.time.thaw()
    await until(lambda: len(limited.calls) == 2)  # the summary, a minute later, hangs
    summary = limited.calls[1]
    assert summary.summary and summary.event_ids == [e.id for e in events[1:]]
    await outbox.stop(grace_s=0)  # the process dies: did the receiver get it? unknown
    await env.store.close()

    env.store = AlertStore(env.path)  # the restart: a fresh rate-limit allowance
    env.clock.advance(5)
    after = Recording("limited", env.clock, rate_limit={"count": 1, "per": "1m"})
    env.outbox(after)
    await until(lambda: all_settled(env, events))
    assert [(c.key, c.event_ids, c.summary) for c in after.calls] == [
        (summary.key, summary.event_ids, True)]  # the same message, never one by one
    accepted: dict[str, list[int]] = {}
    for call in [*limited.delivered, *after.delivered]:  # a receiver deduping on the key
        assert call.key not in accepted, f"{call.key} accepted twice"
        accepted[call.key] = call.event_ids
    assert sorted(i for ids in accepted.values() for i in ids) == [e.id for e in events]
    for e in events[1:]:
        [d] = await env.store.deliveries_for_event(e.id or 0)
        assert (d.status, d.summary_id) == ("summarized", summary.key)


async def test_a_failed_summary_is_retried_with_the_same_members_and_key(env: Env) -> None:
    limited = Recording("limited", env.clock, rate_limit={"count": 1, "per": "1m"},
                        script=[None, DeliveryError("timed out after 120 s")])
    events = [await env.record(["limited"]) for _ in range(3)]
    env.outbox(limited)
    await until(lambda: all_settled(env, events), timeout=20)
    summaries = [c for c in limited.calls if c.summary]
    assert len(summaries) == 2 and summaries[0].key == summaries[1].key
    assert summaries[0].event_ids == summaries[1].event_ids == [e.id for e in events[1:]]
    assert not [c for c in limited.calls[1:] if not c.summary]
