"""Group commit in the ingester: concurrent writes share batches, and a bad row fails alone."""

from __future__ import annotations

import asyncio

from clustersync.adapters.store import ObjectKey, StoredObject, StoreError
from clustersync.adapters.store.postgres import open_postgres
from clustersync.model import Kind, ObjectRef
from clustersync.runtime.batcher import WriteBatcher

CONFIGMAPS = Kind("", "v1", "configmaps")


def row(name: str, seq: int, body: bytes | None = None) -> StoredObject:
    key = ObjectKey("acme", "east", ObjectRef(CONFIGMAPS, "default", name))
    obj = body if body is not None else b'{"metadata": {"name": "%s"}}' % name.encode()
    return StoredObject(key, f"uid-{name}", str(seq), f"sum-{seq}", obj, seq)


async def test_concurrent_writes_share_batches_and_a_bad_row_fails_alone(
    pg_database_url: str,
) -> None:
    store = await open_postgres(pg_database_url)
    batcher = WriteBatcher(store)
    batcher.start()
    try:
        good = [row(f"cm-{i}", i + 1) for i in range(50)]
        bad = row("poison", 99, b'{"a": "\\u0000"}')  # jsonb refuses NUL characters
        results = await asyncio.gather(
            *(batcher.apply([w]) for w in [*good[:25], bad, *good[25:]]), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert len(failures) == 1 and isinstance(failures[0], StoreError)
        assert results[25] is failures[0]  # the poison write's own caller got the error
        stored = await store.list("acme", "east")
        assert sorted(r.key.ref.name for r in stored) == sorted(w.key.ref.name for w in good)
        assert batcher.batches < len(good)  # grouped, not one transaction per write
    finally:
        await batcher.stop()
        await store.close()


async def test_an_unstarted_batcher_writes_directly(pg_database_url: str) -> None:
    store = await open_postgres(pg_database_url)
    batcher = WriteBatcher(store)
    try:
        # Never started (or stopped): writes go straight to the store.
        await batcher.apply([row("direct", 1)])
        assert [r.key.ref.name for r in await store.list()] == ["direct"]
    finally:
        await store.close()


async def test_writes_after_stop_go_straight_to_the_store(pg_database_url: str) -> None:
    store = await open_postgres(pg_database_url)
    batcher = WriteBatcher(store)
    batcher.start()
    try:
        await batcher.apply([row("first", 1)])
        await batcher.stop()
        await batcher.apply([row("after-stop", 2)])  # straight through once stopped
        assert len(await store.list()) == 2
    finally:
        await store.close()
