"""Scores of one rule on one stream with one model: firing episodes against labels.

* An **episode** runs from a firing to its resolve (or the recording's end).
  It is *matched* when it overlaps an ``event`` label of its stream (and rule,
  if the label names one); otherwise it is a false alarm.
* **Precision** = matched episodes / episodes; **recall** = ``event`` labels
  overlapped by at least one episode / ``event`` labels; F1 their harmonic
  mean. With no episodes precision is 1 (nothing false); with no labels
  recall is 1 (nothing to miss).
* **Onset delay** = the first overlapping episode's start minus the label's
  start (0 when the rule was already firing).
* **False-alarm minutes per hour**: the unmatched episodes' total length per
  hour of recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watcher.backtest.labels import Label


@dataclass(slots=True)
class Episode:
    start: float
    end: float
    matched: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3),
                "matched": self.matched}


@dataclass(frozen=True, slots=True)
class Score:
    precision: float
    recall: float
    f1: float
    matched: int
    missed: int
    false: int
    onset_delays_s: tuple[float, ...]
    false_alarm_minutes_per_hour: float


def score(episodes: Sequence[Episode], labels: Sequence[Label], duration_s: float) -> Score:
    """Mark ``episodes`` matched or not and score them against ``labels`` (already
    filtered to this rule and stream)."""
    events = [label for label in labels if label.is_event]
    for episode in episodes:
        episode.matched = any(label.overlaps(episode.start, max(episode.end,
                                                                episode.start + 1e-6))
                              for label in events)
    delays = []
    detected = 0
    for label in events:
        hits = [e for e in episodes if label.overlaps(e.start, max(e.end, e.start + 1e-6))]
        if hits:
            detected += 1
            delays.append(max(0.0, min(e.start for e in hits) - label.start))
    matched = sum(e.matched for e in episodes)
    precision = matched / len(episodes) if episodes else 1.0
    recall = detected / len(events) if events else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    false_s = sum(e.end - e.start for e in episodes if not e.matched)
    hours = duration_s / 3600
    return Score(precision, recall, f1, matched, len(events) - detected,
                 len(episodes) - matched, tuple(delays),
                 (false_s / 60) / hours if hours else 0.0)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile ``q`` (0..1) of ``values``, None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
