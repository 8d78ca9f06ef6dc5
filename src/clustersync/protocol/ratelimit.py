"""A token bucket (the policy; the clock is the caller's)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; starts full.

    A rate of 0 means no limit.
    """

    rate: float
    burst: float
    _tokens: float = -1.0
    _last: float | None = None

    def take(self, now: float, count: float = 1.0) -> bool:
        """Spend ``count`` tokens at ``now``; False (and nothing spent) if there are too few."""
        if self.rate <= 0:
            return True
        if self._last is None:
            self._tokens = self.burst
        else:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < count:
            return False
        self._tokens -= count
        return True
