"""Per-object coalescing of watch events: leading edge, then a quiet period bounded by max_wait.

kubescape debounces each object until it has been quiet for 5 s, so an object that changes more
often than that is never sent, and a lone change always waits the whole period. Here:

- the first change of an object that has not been sent for ``quiet`` seconds is due at once
  (leading edge), so a lone change costs no waiting at all;
- a change that follows within ``quiet`` seconds of the object's last send is held back and is
  due when the object has been quiet for ``quiet`` seconds *or* has waited ``max_wait`` seconds
  since its first pending change, whichever comes first.

The last event wins: added+modified is sent as modified, deleted+added as added.

Due times live in a heap with lazy deletion (an offer pushes the entry's new due time; stale
ones are skipped when they surface), so a change costs O(log n) however many objects wait.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Pending(Generic[V]):
    value: V
    first: float
    due: float
    leading: bool  # due at once; later offers before it goes out only replace the value


class Coalescer(Generic[K, V]):
    def __init__(self, quiet: float, max_wait: float) -> None:
        if quiet < 0 or max_wait < quiet:
            raise ValueError("need 0 <= quiet <= max_wait")
        self.quiet = quiet
        self.max_wait = max_wait
        self._pending: dict[K, _Pending[V]] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()  # ties in the heap never compare keys
        # When each recently sent key went out, oldest first; a key older than ``quiet`` is
        # dropped, so this holds only what was sent within the last quiet period.
        self._sent: dict[K, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def offer(self, key: K, value: V, now: float) -> bool:
        """Record the latest value of ``key``; True when it is due at once (leading edge), which
        is the only case where an offer makes the earliest due time earlier."""
        entry = self._pending.get(key)
        if entry is not None:
            entry.value = value
            if entry.leading:
                return True
            due = min(now + self.quiet, entry.first + self.max_wait)
            if due != entry.due:
                entry.due = due
                heapq.heappush(self._heap, (due, next(self._order), key))
            return due <= now
        self._forget_sent_before(now - self.quiet)
        sent = self._sent.get(key)
        leading = sent is None or sent <= now - self.quiet
        due = now if leading else now + self.quiet  # quiet <= max_wait
        self._pending[key] = _Pending(value, now, due, leading)
        heapq.heappush(self._heap, (due, next(self._order), key))
        return leading

    def next_due(self) -> float | None:
        """When the earliest entry becomes due, or None if nothing is pending."""
        heap = self._heap
        while heap:
            due, _, key = heap[0]
            entry = self._pending.get(key)
            if entry is not None and entry.due == due:
                return due
            heapq.heappop(heap)  # stale: superseded by a later offer, popped or discarded
        return None

    def pop_due(self, now: float) -> list[V]:
        """Remove and return due values, oldest first pending change first."""
        heap = self._heap
        due: list[tuple[float, K, _Pending[V]]] = []
        while heap and heap[0][0] <= now:
            due_at, _, key = heapq.heappop(heap)
            entry = self._pending.get(key)
            if entry is None or entry.due != due_at:
                continue
            del self._pending[key]
            due.append((entry.first, key, entry))
        self._forget_sent_before(now - self.quiet)
        if not due:
            return []
        due.sort(key=lambda item: item[0])
        for _, key, _ in due:
            self._sent.pop(key, None)  # re-inserted at the end: the dict stays oldest first
            self._sent[key] = now
        return [entry.value for _, _, entry in due]

    def _forget_sent_before(self, horizon: float) -> None:
        sent = self._sent
        while sent:
            key = next(iter(sent))
            if sent[key] > horizon:
                return
            del sent[key]

    def discard_where(self, condition: Callable[[V], bool]) -> int:
        """Forget pending values that something else will cover; returns how many."""
        doomed = [key for key, entry in self._pending.items() if condition(entry.value)]
        for key in doomed:
            del self._pending[key]
        if not self._pending:
            self._heap.clear()
        return len(doomed)

    def drain(self) -> list[V]:
        values = [e.value for e in sorted(self._pending.values(), key=lambda e: e.first)]
        self._pending.clear()
        self._heap.clear()
        return values
