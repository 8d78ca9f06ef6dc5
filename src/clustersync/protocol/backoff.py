"""Jittered exponential backoff (the policy; sleeping is the caller's job)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """kubescape's defaults: 0.5 s initial, x1.5, +-50 % jitter, 60 s ceiling."""

    initial: float = 0.5
    multiplier: float = 1.5
    ceiling: float = 60.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    _current: float = 0.0

    def next_delay(self) -> float:
        self._current = (
            self.initial
            if self._current == 0
            else min(self.ceiling, self._current * self.multiplier)
        )
        spread = self._current * self.jitter
        return max(0.0, self._current + self.rng.uniform(-spread, spread))

    def reset(self) -> None:
        """Call after a healthy period so the next failure retries quickly again."""
        self._current = 0.0
