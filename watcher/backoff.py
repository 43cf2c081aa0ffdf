"""Exponential backoff with jitter, for anything that reconnects."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays ``initial``, ``initial*factor``, ... capped at ``maximum``, each +-``jitter``."""

    initial: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1
    rng: Callable[[], float] = field(default=random.random, repr=False)
    attempts: int = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * self.factor ** self.attempts)
        self.attempts += 1
        return max(0.0, base * (1 + (self.rng() * 2 - 1) * self.jitter))

    def reset(self) -> None:
        self.attempts = 0
