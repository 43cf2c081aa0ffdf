"""The alert state machine: every transition, table-driven, plus invariants by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.clock import ManualClock
from watcher.engine.state import AlertPolicy, AlertState, Kind, Status, Transition

T, F, N = True, False, None
Step = tuple[float, bool | None, str, str]
"""(seconds since start, verdict, status after, emitted: "" or kind + "!"/"-" + episode)."""


def emitted(transitions: list[Transition]) -> str:
    return " ".join(f"{t.kind}{'!' if t.notify else '-'}{t.episode}" for t in transitions)


def run(policy: AlertPolicy, script: list[Step]) -> list[tuple[AlertState, list[Transition]]]:
    clock, start, state, out = ManualClock(), ManualClock().now_ms(), AlertState(), []
    for seconds, verdict, _, _ in script:
        clock.advance((start + round(seconds * 1000) - clock.now_ms()) / 1000)
        state, transitions = policy.step(state, verdict, clock.now_ms())
        out.append((state, transitions))
    return out


CASES: list[tuple[str, AlertPolicy, list[Step]]] = [
    ("count 1 fires on the first match", AlertPolicy(for_count=1),
     [(0, T, "firing", "firing!1")]),
    ("no for at all fires on the first match", AlertPolicy(),
     [(0, F, "inactive", ""), (5, T, "firing", "firing!1")]),
    ("count 3 fires at the third consecutive match", AlertPolicy(for_count=3),
     [(0, T, "pending", ""), (5, T, "pending", ""), (10, T, "firing", "firing!1"),
      (15, T, "firing", "")]),
    ("a non-match resets the count", AlertPolicy(for_count=3),
     [(0, T, "pending", ""), (5, T, "pending", ""), (10, F, "inactive", ""),
      (15, T, "pending", ""), (20, T, "pending", ""), (25, T, "firing", "firing!1")]),
    ("None neither advances nor resets a count", AlertPolicy(for_count=3),
     [(0, T, "pending", ""), (5, N, "pending", ""), (10, N, "pending", ""),
      (15, T, "pending", ""), (20, T, "firing", "firing!1")]),
    ("for_ms 0 fires on the first match", AlertPolicy(for_ms=0),
     [(0, T, "firing", "firing!1")]),
    ("for_ms fires on the first match once the duration has held", AlertPolicy(for_ms=10_000),
     [(0, T, "pending", ""), (5, T, "pending", ""), (9.999, T, "pending", ""),
      (10, T, "firing", "firing!1")]),
    ("for_ms restarts after a non-match", AlertPolicy(for_ms=10_000),
     [(0, T, "pending", ""), (8, F, "inactive", ""), (9, T, "pending", ""),
      (18, T, "pending", ""), (19, T, "firing", "firing!1")]),
    ("time spent in None counts toward for_ms, judged at the next match",
     AlertPolicy(for_ms=10_000),
     [(0, T, "pending", ""), (5, N, "pending", ""), (12, N, "pending", ""),
      (13, T, "firing", "firing!1")]),
    ("keep_firing_for 0 resolves on the first non-match", AlertPolicy(),
     [(0, T, "firing", "firing!1"), (5, F, "resolved", "resolved!1"),
      (10, F, "resolved", "")]),
    ("a flap shorter than keep_firing_for does not resolve; a longer clear resolves once",
     AlertPolicy(keep_firing_for_ms=30_000),
     [(0, T, "firing", "firing!1"), (10, F, "firing", ""), (35, T, "firing", ""),
      (40, F, "firing", ""), (60, F, "firing", ""), (69.999, F, "firing", ""),
      (70, F, "resolved", "resolved!1"), (80, F, "resolved", "")]),
    ("None never clears a firing alert, but the clear is timed from its first non-match",
     AlertPolicy(keep_firing_for_ms=30_000),
     [(0, T, "firing", "firing!1"), (10, F, "firing", ""), (45, N, "firing", ""),
      (46, F, "resolved", "resolved!1")]),
    ("None while firing does not resolve even with keep_firing_for 0", AlertPolicy(),
     [(0, T, "firing", "firing!1"), (5, N, "firing", ""), (10, F, "resolved", "resolved!1")]),
    ("a second episode within cooldown is recorded but not notified, nor its resolve",
     AlertPolicy(cooldown_ms=60_000),
     [(0, T, "firing", "firing!1"), (10, F, "resolved", "resolved!1"),
      (20, T, "firing", "firing-2"), (30, F, "resolved", "resolved-2"),
      (60, T, "firing", "firing!3"), (70, F, "resolved", "resolved!3")]),
    ("cooldown counts from the last notification, not the last suppressed firing",
     AlertPolicy(cooldown_ms=60_000),
     [(0, T, "firing", "firing!1"), (1, F, "resolved", "resolved!1"),
      (50, T, "firing", "firing-2"), (51, F, "resolved", "resolved-2"),
      (61, T, "firing", "firing!3")]),
    ("a pending that aborts after an episode goes back to resolved", AlertPolicy(for_count=2),
     [(0, T, "pending", ""), (1, T, "firing", "firing!1"), (2, F, "resolved", "resolved!1"),
      (3, T, "pending", ""), (4, F, "resolved", "")]),
    ("repeat_every re-notifies while firing", AlertPolicy(repeat_every_ms=60_000),
     [(0, T, "firing", "firing!1"), (30, T, "firing", ""), (60, T, "firing", "repeat!1"),
      (90, T, "firing", ""), (125, T, "firing", "repeat!1"), (130, F, "resolved", "resolved!1")]),
    ("repeats keep firing through keep_firing_for, on non-matches too",
     AlertPolicy(repeat_every_ms=20_000, keep_firing_for_ms=60_000),
     [(0, T, "firing", "firing!1"), (10, F, "firing", ""), (20, F, "firing", "repeat!1"),
      (30, N, "firing", ""), (45, F, "firing", "repeat!1"), (70, F, "resolved", "resolved!1")]),
    ("no repeat on None", AlertPolicy(repeat_every_ms=10_000),
     [(0, T, "firing", "firing!1"), (20, N, "firing", ""), (21, T, "firing", "repeat!1")]),
    ("repeats never come faster than the cooldown",
     AlertPolicy(repeat_every_ms=10_000, cooldown_ms=30_000),
     [(0, T, "firing", "firing!1"), (10, T, "firing", ""), (20, T, "firing", ""),
      (30, T, "firing", "repeat!1")]),
    ("a repeat of a suppressed episode notifies it, so its resolve is sent",
     AlertPolicy(cooldown_ms=60_000, repeat_every_ms=60_000),
     [(0, T, "firing", "firing!1"), (10, F, "resolved", "resolved!1"),
      (20, T, "firing", "firing-2"), (40, T, "firing", ""), (60, T, "firing", "repeat!2"),
      (70, F, "resolved", "resolved!2")]),
    ("episodes increment", AlertPolicy(for_count=2),
     [(0, T, "pending", ""), (1, T, "firing", "firing!1"), (2, F, "resolved", "resolved!1"),
      (3, T, "pending", ""), (4, T, "firing", "firing!2"), (5, F, "resolved", "resolved!2"),
      (6, T, "pending", ""), (7, T, "firing", "firing!3")]),
    ("a clock that steps back makes nothing due", AlertPolicy(for_ms=5_000),
     [(10, T, "pending", ""), (4, T, "pending", ""), (14, T, "pending", ""),
      (15, T, "firing", "firing!1")]),
    ("cooldown 0 never suppresses, even when the clock steps back", AlertPolicy(),
     [(10, T, "firing", "firing!1"), (11, F, "resolved", "resolved!1"),
      (5, T, "firing", "firing!2")]),
]


@pytest.mark.parametrize(("policy", "script"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transitions(policy: AlertPolicy, script: list[Step]) -> None:
    got = [(str(s.status), emitted(ts)) for s, ts in run(policy, script)]
    assert got == [(status, out) for _, _, status, out in script]


def test_pending_fields_track_the_count_and_its_start() -> None:
    policy, t0 = AlertPolicy(for_count=3), 1_000
    s1, _ = policy.step(AlertState(), True, t0)
    s2, _ = policy.step(s1, True, t0 + 500)
    assert (s2.pending_count, s2.pending_since_ms, s2.last_match_ms) == (2, t0, t0 + 500)
    s3, [t] = policy.step(s2, True, t0 + 900)
    assert t == Transition(Kind.FIRING, True, t0 + 900, 1)
    assert (s3.pending_count, s3.pending_since_ms, s3.firing_since_ms) == (0, None, t0 + 900)
    assert (s3.last_notified_ms, s3.episode, s3.episode_notified) == (t0 + 900, 1, True)
    s4, _ = policy.step(s3, False, t0 + 1_000)
    assert s4.status is Status.RESOLVED and s4.firing_since_ms is None
    assert (s4.episode, s4.episode_notified, s4.last_match_ms) == (1, True, t0 + 900)


def test_clearing_since_is_set_on_the_first_non_match_and_reset_by_a_match() -> None:
    policy = AlertPolicy(keep_firing_for_ms=10_000)
    s, _ = policy.step(AlertState(), True, 0)
    s, _ = policy.step(s, False, 1_000)
    s, _ = policy.step(s, False, 2_000)
    assert s.clearing_since_ms == 1_000
    s, _ = policy.step(s, True, 3_000)
    assert s.clearing_since_ms is None and s.status is Status.FIRING


@pytest.mark.parametrize("state", [
    AlertState(),
    AlertState(status=Status.PENDING, pending_count=2, pending_since_ms=5, updated_ms=7),
    AlertState(status=Status.FIRING, firing_since_ms=5, clearing_since_ms=9, episode=3,
               last_notified_ms=0, updated_ms=9),
    AlertState(status=Status.RESOLVED, episode=1, updated_ms=3),
], ids=["inactive", "pending", "firing", "resolved"])
def test_none_changes_nothing(state: AlertState) -> None:
    policy = AlertPolicy(for_ms=1, keep_firing_for_ms=1, repeat_every_ms=1)
    new, transitions = policy.step(state, None, 10**9)
    assert new is state and transitions == []


@pytest.mark.parametrize("kwargs", [
    {"for_count": 0}, {"for_ms": -1}, {"for_count": 1, "for_ms": 0},
    {"keep_firing_for_ms": -1}, {"cooldown_ms": -1}, {"repeat_every_ms": 0},
])
def test_bad_policies_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        AlertPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"status": Status.PENDING}, {"pending_count": 1, "pending_since_ms": 0},
    {"status": Status.FIRING, "episode": 1}, {"clearing_since_ms": 5},
    {"status": Status.FIRING, "firing_since_ms": 1, "episode": 0},
])
def test_inconsistent_states_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AlertState(**kwargs)  # type: ignore[arg-type]


def test_state_dict_round_trip_ignores_unknown_keys() -> None:
    state = AlertState(status=Status.FIRING, firing_since_ms=5, episode=2,
                       episode_notified=True, last_notified_ms=5, updated_ms=6)
    data = state.to_dict()
    assert data["status"] == "firing"
    assert AlertState.from_dict({**data, "from_the_future": 1}) == state
    assert AlertState.from_dict({}) == AlertState()


# -- invariants over random sequences -------------------------------------------

policies = st.builds(
    AlertPolicy,
    for_count=st.none() | st.integers(1, 4),
    keep_firing_for_ms=st.sampled_from([0, 0, 1_000, 5_000, 20_000]),
    cooldown_ms=st.sampled_from([0, 0, 3_000, 10_000, 60_000]),
    repeat_every_ms=st.none() | st.sampled_from([1_000, 5_000, 30_000]),
) | st.builds(
    AlertPolicy,
    for_ms=st.integers(0, 10_000),
    keep_firing_for_ms=st.integers(0, 20_000),
    cooldown_ms=st.integers(0, 60_000),
    repeat_every_ms=st.none() | st.integers(1, 30_000),
)
steps = st.lists(
    st.tuples(st.sampled_from([True, True, False, None]), st.integers(0, 6_000)),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(policy=policies, script=steps, resume=st.booleans())
def test_invariants(
    policy: AlertPolicy, script: list[tuple[bool | None, int]], resume: bool
) -> None:
    state, now = AlertState(), 1_700_000_000_000
    fired: dict[int, Transition] = {}
    resolved: set[int] = set()
    notified_episodes: set[int] = set()
    last_notify: int | None = None
    for matched, dt in script:
        now += dt
        if resume:  # a restart between any two steps changes nothing
            state = AlertState.from_dict(state.to_dict())
        before = state
        state, transitions = policy.step(state, matched, now)
        assert len(transitions) <= 1
        if matched is None:
            assert state is before and not transitions
        for t in transitions:
            assert t.at_ms == now
            if t.kind is Kind.FIRING:
                assert t.episode not in fired, "two firing transitions in one episode"
                assert t.episode == len(fired) + 1, "episodes count up by one"
                if t.notify and policy.cooldown_ms and last_notify is not None:
                    assert now - last_notify >= policy.cooldown_ms, "notified within cooldown"
                fired[t.episode] = t
            elif t.kind is Kind.RESOLVED:
                assert t.episode in fired and t.episode not in resolved
                assert t.notify == (t.episode in notified_episodes)
                resolved.add(t.episode)
            else:
                assert t.notify and t.episode in fired and t.episode not in resolved
            if t.notify and t.kind is not Kind.RESOLVED:
                last_notify = now
                notified_episodes.add(t.episode)
        open_episodes = set(fired) - resolved
        assert (state.status is Status.FIRING) == bool(open_episodes)
        assert len(open_episodes) <= 1
        assert state.episode == len(fired)
        if state.status is Status.PENDING:
            assert policy.for_count is None or state.pending_count < policy.for_count
        if state.status in (Status.INACTIVE, Status.RESOLVED):
            assert state.status is (Status.RESOLVED if fired else Status.INACTIVE)
