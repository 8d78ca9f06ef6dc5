"""Group commit: the writes of messages handled concurrently go to the store in one batch.

Handlers of different partitions run at once; each awaits its own writes before acknowledging
its message, so per-object order is untouched. While one batch is being written, the next one
gathers: batches grow with load and no write waits on a timer. If a batch fails, each message's
writes are retried alone, so one bad row fails only its own message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from clustersync.adapters.store import Store, Write
from clustersync.runtime.supervisor import Supervisor

TASK = "write-batcher"

StaleHandler = Callable[[int, Sequence[Write]], None]
"""Told how many of ``writes`` the store refused as stale (they did not land)."""


class WriteBatcher:
    def __init__(
        self,
        store: Store,
        max_batch: int = 2000,
        on_stale: StaleHandler | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_stale = on_stale
        self.supervisor = supervisor or Supervisor("ingester")
        self._waiting: list[tuple[Sequence[Write], asyncio.Future[None]]] = []
        self._in_flight: list[tuple[Sequence[Write], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._started = False
        self.batches = 0

    def start(self) -> None:
        # Supervised: if the loop ever dies, its callers get the error (never a hang), it is
        # logged, and the loop restarts for the writes that come after.
        self.supervisor.spawn(TASK, self._run)
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self.supervisor.stop()
            self._started = False
        self._fail_pending(RuntimeError("the ingester is stopping"))

    async def apply(self, writes: Sequence[Write]) -> None:
        if not self._started:  # not started: write directly
            await self._apply(writes)
            return
        if not self.supervisor.running(TASK):
            raise RuntimeError("the write batcher has stopped after repeated failures")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((writes, future))
        self._wake.set()
        await future

    def _take(self) -> list[tuple[Sequence[Write], asyncio.Future[None]]]:
        taken: list[tuple[Sequence[Write], asyncio.Future[None]]] = []
        rows = 0
        while self._waiting and (not taken or rows + len(self._waiting[0][0]) <= self.max_batch):
            item = self._waiting.pop(0)
            taken.append(item)
            rows += len(item[0])
        return taken

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while batch := self._take():
                    self._in_flight = batch
                    await self._write(batch)
                    self._in_flight = []
        except BaseException as exc:
            self._fail_pending(exc if isinstance(exc, Exception) else RuntimeError("stopped"))
            raise

    def _fail_pending(self, error: Exception) -> None:
        for _, future in self._in_flight + self._waiting:
            _settle(future, error)
        self._in_flight, self._waiting = [], []

    async def _write(self, batch: list[tuple[Sequence[Write], asyncio.Future[None]]]) -> None:
        self.batches += 1
        try:
            await self._apply([w for writes, _ in batch for w in writes])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for writes, future in batch:  # isolate the failing message(s)
                try:
                    await self._apply(writes)
                except Exception as one:
                    _settle(future, one)
                else:
                    _settle(future, None)
            return
        for _, future in batch:
            _settle(future, None)

    async def _apply(self, writes: Sequence[Write]) -> None:
        landed = await self.store.apply(writes)
        if landed < len(writes) and self.on_stale is not None:
            self.on_stale(len(writes) - landed, writes)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its handler was cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
