"""A write the store refuses as stale is counted and logged (at most once per interval), never
silent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from clustersync.adapters.bus.base import MAX_VERSION
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.envelope import Envelope, encode_envelope, write_subject
from clustersync.protocol.messages import PutObject
from clustersync.runtime.ingester import Ingester, StaleWrites

REF = ObjectRef(Kind("", "v1", "configmaps"), "default", "settings")
KEY = ObjectKey("acct", "cl", REF)
NEWER = b'{"metadata":{"name":"settings","namespace":"default","uid":"u","resourceVersion":"9"}}'


def stale_count() -> float:
    value = REGISTRY.get_sample_value("clustersync_stale_writes_total", {"source": "ingester"})
    return value or 0.0


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_stale_backend_write_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_sqlite(f"sqlite:///{tmp_path}/s.db")
    bus = MemoryBus(redelivery_delay=0)
    # The row carries the highest possible version: every bus message is older than it.
    held = StoredObject(KEY, "u", "9", "sum", NEWER, MAX_VERSION)
    assert await store.apply([held]) == 1
    ingester = Ingester(bus, store)
    clock = Clock()
    ingester.stale = StaleWrites(interval=60, clock=clock)
    ingester.writer.on_stale = ingester.stale
    await ingester.start()
    caplog.set_level(logging.WARNING, logger="clustersync.ingester")
    try:
        before = stale_count()
        put = PutObject(ref=REF, checksum="", object=b'{"metadata":{"name":"settings"}}')
        data = encode_envelope(Envelope("acct", "cl", put))

        await bus.publish(write_subject("acct", "cl"), data)
        await until(lambda: ingester.stale.total == 1)
        assert stale_count() == before + 1
        refused = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
        assert len(refused) == 1
        assert "acct/cl" in refused[0] and "settings" in refused[0]

        await bus.publish(write_subject("acct", "cl"), data)  # within the interval: not logged
        await until(lambda: ingester.stale.total == 2)
        clock.now += 61
        await bus.publish(write_subject("acct", "cl"), data)
        await until(lambda: ingester.stale.total == 3)
        refused = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
        assert len(refused) == 2
        assert refused[1].startswith("store refused 2 stale writes")  # one was held back
        assert stale_count() == before + 3
        row = await store.get(KEY)
        assert row is not None and row.object == NEWER and row.seq == MAX_VERSION
    finally:
        await ingester.stop()
        await bus.close()
        await store.close()
