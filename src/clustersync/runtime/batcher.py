"""Group commit: the writes of messages handled concurrently go to the store in one batch.

Handlers run at once (several partitions, and several messages of one partition, in per-object
order, see object_order.py); each awaits its own writes before acknowledging its message. While
one batch is being written, the next one gathers: batches grow with load and no write waits on
a timer. If a batch fails, each message's writes are retried alone, so one bad row fails only
its own message. Reads go the same way (ReadBatcher): the stored copies that concurrent handlers
ask for are read in one query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from clustersync.adapters.store import ObjectKey, Store, StoredObject, Write
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


Reading = tuple[list[ObjectKey], asyncio.Future[dict[ObjectKey, StoredObject]]]


class ReadBatcher:
    """``get_many`` for concurrent callers: the keys of every call that arrives while a read
    runs are read together next, in one query of at most ``max_keys`` keys (a call asking for
    more is read alone). A failed read fails the calls it served."""

    def __init__(self, store: Store, max_keys: int = 2000) -> None:
        self.store = store
        self.max_keys = max_keys
        self.reads = 0
        self._waiting: list[Reading] = []
        self._task: asyncio.Task[None] | None = None

    async def get_many(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, StoredObject]:
        future: asyncio.Future[dict[ObjectKey, StoredObject]]
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((list(keys), future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read_all(), name="read-batcher")
        return await future

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _take(self) -> list[Reading]:
        taken: list[Reading] = []
        keys = 0
        while self._waiting and (not taken or keys + len(self._waiting[0][0]) <= self.max_keys):
            item = self._waiting.pop(0)
            taken.append(item)
            keys += len(item[0])
        return taken

    async def _read_all(self) -> None:
        batch: list[Reading] = []
        try:
            while batch := self._take():
                self.reads += 1
                try:
                    found = await self.store.get_many([k for keys, _ in batch for k in keys])
                except Exception as exc:
                    for _, future in batch:
                        _settle_read(future, exc)
                    continue
                for keys, future in batch:
                    _settle_read(future, {k: found[k] for k in keys if k in found})
        except BaseException:  # cancelled by stop(): nobody waits forever
            for _, future in batch + self._waiting:
                _settle_read(future, RuntimeError("the ingester is stopping"))
            self._waiting = []
            raise


def _settle_read(
    future: asyncio.Future[dict[ObjectKey, StoredObject]],
    outcome: dict[ObjectKey, StoredObject] | Exception,
) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
