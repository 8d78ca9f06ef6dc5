"""Tombstones are kept for the retention period, then purged by the ingester."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.store import Delete, ObjectKey, StoredObject
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model import Kind, ObjectRef
from clustersync.runtime.ingester import Ingester

KEY = ObjectKey("acct", "cl", ObjectRef(Kind("", "v1", "configmaps"), "default", "gone"))


def late_put(seq: int) -> StoredObject:
    return StoredObject(KEY, "uid", "1", "sum", b'{"metadata":{"name":"gone"}}', seq)


async def test_tombstones_block_late_puts_until_the_retention_has_passed(tmp_path: Path) -> None:
    store = await open_sqlite(f"sqlite:///{tmp_path}/s.db")
    bus = MemoryBus()
    try:
        assert await store.apply([Delete(KEY, 100)]) == 1
        assert await store.apply([late_put(50)]) == 0  # the tombstone refuses a late put

        kept = Ingester(bus, store, tombstone_retention=3600, purge_interval=0.01)
        await kept.start()
        try:
            assert await store.apply([late_put(50)]) == 0  # within retention: still refused
        finally:
            await kept.stop()

        purging = Ingester(bus, store, tombstone_retention=0, purge_interval=0.01)
        await purging.start()
        try:
            async def landed() -> bool:
                return await store.apply([late_put(50)]) == 1

            deadline = asyncio.get_running_loop().time() + 5
            while not await landed():
                assert asyncio.get_running_loop().time() < deadline, "tombstone never purged"
                await asyncio.sleep(0.01)
        finally:
            await purging.stop()
        assert (await store.get(KEY)) is not None
    finally:
        await bus.close()
        await store.close()
