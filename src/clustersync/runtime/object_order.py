"""Per-object order for handlers that run at once.

The ingester lets several messages of one bus partition be handled at the same time, so their
writes share a transaction (runtime/batcher.py). What must not change is the order in which the
messages about one object are decided and written: a patch is checked against the copy the
message before it wrote. Each handler therefore takes its turn for the objects it is about: it
waits for the earlier handlers holding any of them, and holds them until it is done.

A message about a whole cluster (an agent connecting, an inventory request) waits for every
earlier handler of that cluster, and every later one of that cluster waits for it: an inventory
lists what the messages before it wrote.

Turns are taken in the order ``turn`` is entered (nothing suspends before the waits start), so
handlers started in delivery order are ordered by delivery. A handler that fails keeps its turn
for its retry (same ``retry_key``), so the messages after it cannot overtake it; a retry that
does not come within ``keep_for`` seconds (the message went to another process) gives it back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable, Iterable
from dataclasses import dataclass, field

Cluster = tuple[str, str]  # account, cluster


@dataclass(eq=False)
class _Turn:
    cluster: Cluster
    done: asyncio.Future[None]
    held: list[tuple[Cluster, Hashable]] = field(default_factory=list)
    whole: bool = False
    expiry: asyncio.TimerHandle | None = None


class ObjectOrder:
    def __init__(self, keep_for: float = 30.0) -> None:
        self.keep_for = keep_for
        self._holders: dict[tuple[Cluster, Hashable], _Turn] = {}  # object -> latest turn
        self._running: dict[Cluster, set[_Turn]] = {}  # turns not given back, per cluster
        self._whole: dict[Cluster, _Turn] = {}  # the latest whole-cluster turn
        self._kept: dict[Hashable, _Turn] = {}  # turns of failed handlers, by retry key

    def busy(self) -> int:
        """How many turns are taken and not yet given back (kept ones included)."""
        return sum(len(turns) for turns in self._running.values())

    @contextlib.asynccontextmanager
    async def turn(
        self, cluster: Cluster, objects: Iterable[Hashable] | None, retry_key: Hashable
    ) -> AsyncIterator[None]:
        """Hold ``objects`` of ``cluster`` (None: the whole cluster) while the block runs, after
        every earlier turn that held any of them. If the block raises, the turn is kept for
        the next ``turn`` with the same ``retry_key``."""
        mine = self._kept.pop(retry_key, None)
        if mine is not None:  # a retry: its place in line is kept, and it waited already
            if mine.expiry is not None:
                mine.expiry.cancel()
            before: set[_Turn] = set()
        else:
            mine, before = self._take(cluster, objects)
        try:
            for earlier in before:
                # Shielded: this turn being cancelled must not cancel the one it waits for.
                await asyncio.shield(earlier.done)
            yield
        except asyncio.CancelledError:
            self._give_back(mine)
            raise
        except BaseException:
            self._kept[retry_key] = mine
            loop = asyncio.get_running_loop()
            mine.expiry = loop.call_later(self.keep_for, self._expire, retry_key, mine)
            raise
        else:
            self._give_back(mine)

    def _take(
        self, cluster: Cluster, objects: Iterable[Hashable] | None
    ) -> tuple[_Turn, set[_Turn]]:
        mine = _Turn(cluster, asyncio.get_running_loop().create_future(), whole=objects is None)
        running = self._running.setdefault(cluster, set())
        before: set[_Turn] = set()
        whole = self._whole.get(cluster)
        if whole is not None:
            before.add(whole)
        if objects is None:
            before |= running
            self._whole[cluster] = mine
        else:
            for name in objects:
                key = (cluster, name)
                holder = self._holders.get(key)
                if holder is mine:  # named twice in one message
                    continue
                if holder is not None:
                    before.add(holder)
                self._holders[key] = mine
                mine.held.append(key)
        running.add(mine)
        return mine, before

    def _expire(self, retry_key: Hashable, turn: _Turn) -> None:
        if self._kept.get(retry_key) is turn:
            del self._kept[retry_key]
            self._give_back(turn)

    def _give_back(self, turn: _Turn) -> None:
        if turn.done.done():
            return
        turn.done.set_result(None)
        running = self._running.get(turn.cluster)
        if running is not None:
            running.discard(turn)
            if not running:
                del self._running[turn.cluster]
        if self._whole.get(turn.cluster) is turn:
            del self._whole[turn.cluster]
        for key in turn.held:
            if self._holders.get(key) is turn:
                del self._holders[key]
