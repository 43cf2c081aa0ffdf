"""Silences, acknowledgements and feedback: matchers, the store, and the runner's gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.models import ScriptedModel

from watcher.engine.silences import (
    AlertLabels,
    Matcher,
    Silence,
    SilenceBook,
    SilenceError,
    matchers_from_options,
    validate,
)
from watcher.engine.state import Kind, Status
from watcher.engine.store import AlertStore
from watcher.store.reviews import Ack, Feedback
from watcher.store.timeline import TimelineQuery

LOBBY = AlertLabels("lobby-motion", "lobby", "warning", {"site": "north"})


def silence(*matchers: Matcher, starts: int = 0, ends: int = 10_000) -> Silence:
    return Silence("abc123", tuple(matchers), starts, ends, "ops", "maintenance")


def test_matchers_follow_alertmanager() -> None:
    assert silence(Matcher("rule", "lobby-motion")).matches(LOBBY)
    assert silence(Matcher("stream", "lob.*", is_regex=True)).matches(LOBBY)
    assert not silence(Matcher("stream", "lob", is_regex=True)).matches(LOBBY)  # anchored
    assert silence(Matcher("site", "north"), Matcher("severity", "warning")).matches(LOBBY)
    assert not silence(Matcher("site", "north"), Matcher("severity", "critical")).matches(LOBBY)
    assert silence(Matcher("severity", "info", is_equal=False)).matches(LOBBY)
    assert not silence(Matcher("team", "ops")).matches(LOBBY)  # a missing label is ""
    cross = AlertLabels("r", "dock+yard")
    assert silence(Matcher("stream", "yard")).matches(cross)
    assert silence(Matcher("stream", "dock+yard")).matches(cross)
    assert silence(Matcher("rule", "lobby-motion"), starts=5, ends=9).active(5)
    assert not silence(Matcher("rule", "x"), starts=5, ends=9).active(9)


def test_bad_silences_are_refused_with_a_reason() -> None:
    with pytest.raises(SilenceError, match="KEY=VALUE"):
        matchers_from_options(labels=["site"])
    with pytest.raises(SilenceError, match="at least one matcher"):
        matchers_from_options()
    with pytest.raises(SilenceError, match="regular expression"):
        Matcher("rule", "(", is_regex=True)
    with pytest.raises(SilenceError, match="match every alert"):
        validate((Matcher("rule", ".*", is_regex=True),), 0, 1, "", "ops")
    with pytest.raises(SilenceError, match="after the start"):
        validate((Matcher("rule", "x"),), 5, 5, "", "ops")
    assert [str(m) for m in matchers_from_options(rule="r", labels=["site=n"])] == [
        "rule='r'", "site='n'"]


async def test_silences_acks_and_feedback_persist(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    async with AlertStore(path) as store:
        await store.add_silence(silence(Matcher("rule", "lobby-motion"), ends=50_000))
        assert await store.add_ack(Ack("r", "cam", 2, "ops", "on it", 10))
        assert not await store.add_ack(Ack("r", "cam", 2, "bob", "me too", 11))
    async with AlertStore(path) as store:  # survives a restart
        [again] = await store.silences()
        assert again.matchers == (Matcher("rule", "lobby-motion"),) and again.ends_ms == 50_000
        assert await store.silences(since_ms=60_000) == []
        assert await store.expire_silence("abc123", 20_000)
        assert not await store.expire_silence("abc123", 30_000)  # already over
        [expired] = await store.silences()
        assert expired.state(20_000) == "expired" and expired.expired_ms == 20_000
        acks = await store.acks([("r", "cam", 2), ("r", "cam", 3)])
        assert list(acks) == [("r", "cam", 2)] and acks[("r", "cam", 2)].created_by == "ops"


async def test_the_book_rereads_the_store(tmp_path: Path) -> None:
    async with AlertStore(tmp_path / "s.sqlite3") as store:
        now = [1000]
        book = SilenceBook(store.silences, lambda: now[0])
        await book.refresh()
        assert book.match(LOBBY) is None
        await store.add_silence(silence(Matcher("stream", "lobby"), ends=5000))
        await book.refresh()
        assert book.match(LOBBY).id == "abc123"
        now[0] = 6000
        assert book.match(LOBBY) is None


async def test_a_silenced_firing_is_recorded_but_not_delivered(make) -> None:
    env = make(ScriptedModel("triage", '{"person": true}', '{"person": false}'))
    book = SilenceBook(env.store.silences, env.clock.now_ms)
    await env.store.add_silence(silence(Matcher("rule", "r"), starts=0,
                                        ends=env.clock.now_ms() + 60_000))
    await book.refresh()
    runner = env.runner(actions=["hook"])
    runner.silences = book
    runner.actions = {"hook": type("A", (), {"send_resolved": True})()}
    env.clock.advance(5)
    fired = await runner.evaluate()
    assert runner.state.status == Status.FIRING and not runner.state.episode_notified
    [event] = await env.store.events()
    assert event.kind is Kind.FIRING and event.silenced_by == "abc123" and not event.notify
    assert await env.store.deliveries_for_event(fired.event_ids[0]) == []
    env.clock.advance(5)
    await runner.evaluate()  # resolves; the episode was never notified, so no resolve is sent
    resolved, _ = await env.store.events()
    assert resolved.kind is Kind.RESOLVED and not resolved.notify
    page = await env.store.timeline(TimelineQuery(silenced=True))
    assert [e.kind for e in page] == [Kind.FIRING]


async def test_an_ack_stops_repeats_until_the_alert_resolves(make) -> None:
    env = make(ScriptedModel("triage", '{"person": true}'))
    runner = env.runner(repeat_every="10s", actions=["hook"])
    runner.actions = {"hook": type("A", (), {"send_resolved": True})()}
    env.clock.advance(5)
    await runner.evaluate()
    env.clock.advance(11)
    await runner.evaluate()
    assert [e.kind for e in await env.store.events()] == [Kind.REPEAT, Kind.FIRING]
    await env.store.add_ack(Ack("r", "cam", runner.state.episode, "ops", "", 0))
    for _ in range(3):
        env.clock.advance(11)
        await runner.evaluate()
    assert [e.kind for e in await env.store.events()] == [Kind.REPEAT, Kind.FIRING]
    assert runner.state.status == Status.FIRING


async def test_feedback_marks_filter_the_timeline(make) -> None:
    env = make(ScriptedModel("triage", '{"person": true}', '{"person": false}'))
    runner = env.runner()
    for _ in range(4):
        env.clock.advance(5)
        await runner.evaluate()
    events = await env.store.events()
    firing = next(e for e in events if e.kind is Kind.FIRING)
    await env.store.set_feedback(Feedback(firing.id, "false_alarm", "a shadow", "ops", 5))
    await env.store.set_feedback(Feedback(firing.id, "real", "it was a person", "ops", 6))
    marks = await env.store.feedback()
    assert marks[firing.id].label == "real" and marks[firing.id].note == "it was a person"
    assert [e.id for e in await env.store.timeline(TimelineQuery(feedback="real"))] == [
        firing.id]
    assert firing.id not in [e.id for e in await env.store.timeline(
        TimelineQuery(feedback="none"))]
    assert [e.id for e in await env.store.timeline(TimelineQuery(stream="cam", limit=1))] == [
        events[0].id]
    second = await env.store.timeline(TimelineQuery(
        limit=1, before=(events[0].created_ms, events[0].id)))
    assert [e.id for e in second] == [events[1].id]
