"""A bus view that delivers every message twice and out of order, as redelivery can.

It wraps a real bus (the embedded one): each message is acknowledged to the real bus at once
and handed to the real handler twice, each time after a random delay, so later messages
overtake earlier ones, on the same subject too. A handler that raises is called again (what the
bus's own redelivery would do), so nothing is lost on the way: whatever diverges afterwards is
the backend's doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from clustersync.adapters.bus import Bus, Delivery, Handler, Subscription

COPIES = 2
MAX_DELAY = 0.15  # seconds a copy may be held back: long enough to overtake a few messages


class _ChaosSubscription:
    def __init__(self, inner: Subscription, tasks: set[asyncio.Task[None]]) -> None:
        self._inner = inner
        self._tasks = tasks

    async def stop(self) -> None:
        await self._inner.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class ChaosBus:
    def __init__(self, inner: Bus, seed: int = 6) -> None:
        self.inner = inner
        self.rng = random.Random(seed)
        self.delivered = 0  # handler calls that returned, copies included
        self.overtaken = 0  # copies handled after a later message of the same subject
        self._latest: dict[str, int] = {}  # highest seq handled per subject

    async def publish(self, subject: str, data: bytes) -> int:
        return await self.inner.publish(subject, data)

    async def subscribe(self, subject_filter: str, durable: str, handler: Handler, *,
                        in_flight: int = 1, idle_expiry: float | None = None) -> Subscription:
        tasks: set[asyncio.Task[None]] = set()

        async def later(delivery: Delivery, delay: float) -> None:
            await asyncio.sleep(delay)  # the fault: hold this copy back
            attempt = delivery.attempt
            while True:
                try:
                    await handler(Delivery(delivery.subject, delivery.data, delivery.seq,
                                           attempt))
                    self.delivered += 1
                    if delivery.seq < self._latest.get(delivery.subject, 0):
                        self.overtaken += 1
                    self._latest[delivery.subject] = max(
                        delivery.seq, self._latest.get(delivery.subject, 0))
                    return
                except Exception:  # the handler asked for redelivery: give it one
                    attempt += 1
                    await asyncio.sleep(0.05)

        async def scatter(delivery: Delivery) -> None:
            for _ in range(COPIES):
                task = asyncio.create_task(later(delivery, self.rng.uniform(0, MAX_DELAY)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        return _ChaosSubscription(await self.inner.subscribe(subject_filter, durable, scatter),
                                  tasks)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.inner.close()
