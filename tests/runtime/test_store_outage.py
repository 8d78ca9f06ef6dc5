"""A PostgreSQL outage delays ingestion; it never parks or loses the messages that arrive."""

from __future__ import annotations

import asyncio

import orjson
from tests.servers import start_postgres

from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.store import ObjectKey, StoredObject, StoreUnavailableError
from clustersync.adapters.store.postgres import PostgresStore, open_postgres
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.envelope import Envelope, encode_envelope, partition_of, up_subject
from clustersync.protocol.messages import PutObject, new_msg_id
from clustersync.runtime.ingester import Ingester

REF = ObjectRef(Kind("", "v1", "configmaps"), "default", "written-during-outage")


async def test_messages_wait_out_a_database_outage() -> None:
    postgres = start_postgres()
    bus = MemoryBus(redelivery_delay=0.05)
    store = await open_postgres(postgres.url)
    ingester = Ingester(bus, store, max_attempts=2)
    await ingester.start()
    try:
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": REF.name, "namespace": "default"},
        }
        msg = PutObject(
            ref=REF, checksum="c", object=orjson.dumps(obj), depth=1, msg_id=new_msg_id()
        )
        await asyncio.to_thread(postgres.pause)
        seq = await bus.publish(
            up_subject("acme", "east", partition_of(msg)),
            encode_envelope(Envelope("acme", "east", msg)),
        )
        # Far more attempts than max_attempts fail while the database is down ...
        deadline = asyncio.get_running_loop().time() + 30
        while ingester.unavailable_retries < 5:
            assert asyncio.get_running_loop().time() < deadline, "no retries seen"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(postgres.resume)
        # ... and the message lands once it is back, instead of having been parked.
        key = ObjectKey("acme", "east", REF)
        deadline = asyncio.get_running_loop().time() + 30
        while (row := await _get(store, key)) is None:
            assert asyncio.get_running_loop().time() < deadline, "message never ingested"
            await asyncio.sleep(0.05)
        assert row.seq == seq
        assert await store.dead_letters() == []
    finally:
        await ingester.stop()
        await bus.close()
        await store.close()
        postgres.stop()


async def _get(store: PostgresStore, key: ObjectKey) -> StoredObject | None:
    try:
        return await store.get(key)
    except StoreUnavailableError:
        return None  # the pool may still be reconnecting
