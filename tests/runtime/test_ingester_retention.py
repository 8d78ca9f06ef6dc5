"""Tombstones are kept for the retention period, then purged by the ingester.

The store is the real SQLite store; the subclass only records each purge pass the ingester makes,
so that the test can wait until purges have really run (a condition) before asserting that the
tombstone is still there. Without that, a purge that ignored the retention could pass unnoticed
simply because it had not run yet.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.store import Delete, ObjectKey, StoredObject
from clustersync.adapters.store.sqlite import SqliteStore, parse_sqlite_url
from clustersync.model import Kind, ObjectRef
from clustersync.runtime.ingester import Ingester

KEY = ObjectKey("acct", "cl", ObjectRef(Kind("", "v1", "configmaps"), "default", "gone"))
RETENTION = 3600.0


class PurgeRecordingStore(SqliteStore):
    """The SQLite store, recording the cutoff of every purge pass."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        super().__init__(executor, conn)
        self.purge_cutoffs: list[float] = []

    async def purge_tombstones(self, older_than: float) -> int:
        purged = await super().purge_tombstones(older_than)
        self.purge_cutoffs.append(older_than)
        return purged


def late_put(seq: int) -> StoredObject:
    return StoredObject(KEY, "uid", "1", "sum", b'{"metadata":{"name":"gone"}}', seq)


async def purge_passes(store: PurgeRecordingStore, count: int, timeout: float = 5.0) -> None:
    """Wait until the ingester has made ``count`` more purge passes."""
    target = len(store.purge_cutoffs) + count
    async with asyncio.timeout(timeout):
        while len(store.purge_cutoffs) < target:
            await asyncio.sleep(0.005)  # poll interval, the condition is the pass count


async def test_tombstones_block_late_puts_until_the_retention_has_passed(tmp_path: Path) -> None:
    store = await PurgeRecordingStore.open(parse_sqlite_url(f"sqlite:///{tmp_path}/s.db"))
    bus = MemoryBus()
    try:
        assert await store.apply([Delete(KEY, 100)]) == 1
        assert await store.apply([late_put(50)]) == 0  # the tombstone refuses a late put

        kept = Ingester(bus, store, tombstone_retention=RETENTION, purge_interval=0.01)
        await kept.start()
        try:
            started = time.time()
            await purge_passes(store, 3)  # purges have run, more than once
            # Each pass asked only for tombstones older than the retention ...
            assert all(cutoff <= started - RETENTION + 60 for cutoff in store.purge_cutoffs)
            # ... so the tombstone survived them and still refuses the late put.
            assert await store.apply([late_put(50)]) == 0
        finally:
            await kept.stop()
        assert await store.get(KEY) is None

        purging = Ingester(bus, store, tombstone_retention=0, purge_interval=0.01)
        await purging.start()
        try:
            await purge_passes(store, 1)
        finally:
            await purging.stop()
        # The pass removed the tombstone: the once-late put now lands.
        assert await store.apply([late_put(50)]) == 1
        assert await store.get(KEY) is not None
    finally:
        await bus.close()
        await store.close()
