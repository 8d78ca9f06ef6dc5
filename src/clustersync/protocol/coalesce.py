"""Per-object coalescing of watch events, with a bound on how long an object can wait.

kubescape debounces each object until it has been quiet for 5 s, so an object that changes more
often than that is never sent. Here an entry is due when it has been quiet for ``quiet`` seconds
*or* has waited ``max_wait`` seconds since its first pending change, whichever comes first.
The last event wins: added+modified is sent as modified, deleted+added as added.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Pending(Generic[V]):
    value: V
    first: float
    last: float


class Coalescer(Generic[K, V]):
    def __init__(self, quiet: float, max_wait: float) -> None:
        if quiet < 0 or max_wait < quiet:
            raise ValueError("need 0 <= quiet <= max_wait")
        self.quiet = quiet
        self.max_wait = max_wait
        self._pending: dict[K, _Pending[V]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def offer(self, key: K, value: V, now: float) -> None:
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = _Pending(value, now, now)
        else:
            entry.value = value
            entry.last = now

    def _due_at(self, entry: _Pending[V]) -> float:
        return min(entry.last + self.quiet, entry.first + self.max_wait)

    def next_due(self) -> float | None:
        """When the earliest entry becomes due, or None if nothing is pending."""
        return min((self._due_at(e) for e in self._pending.values()), default=None)

    def pop_due(self, now: float) -> list[V]:
        """Remove and return due values, oldest first pending change first."""
        due = [(e.first, k) for k, e in self._pending.items() if self._due_at(e) <= now]
        due.sort(key=lambda pair: pair[0])
        return [self._pending.pop(key).value for _, key in due]

    def discard_where(self, condition: Callable[[V], bool]) -> int:
        """Forget pending values that something else will cover; returns how many."""
        doomed = [key for key, entry in self._pending.items() if condition(entry.value)]
        for key in doomed:
            del self._pending[key]
        return len(doomed)

    def drain(self) -> list[V]:
        values = [e.value for e in sorted(self._pending.values(), key=lambda e: e.first)]
        self._pending.clear()
        return values
