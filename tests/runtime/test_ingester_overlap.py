"""The ingester on NATS + PostgreSQL handles many messages of one durable at once, yet applies
each object's messages in order (agent traffic and backend writes) and each cluster's reports in
order, and loses none when PostgreSQL goes away in the middle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from tests.servers import start_postgres

from clustersync.adapters.bus import Delivery
from clustersync.adapters.bus.nats import open_nats
from clustersync.adapters.store import ObjectKey
from clustersync.adapters.store.postgres import open_postgres
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.envelope import (
    Envelope,
    decode_envelope,
    down_subject,
    encode_envelope,
    partition_of,
    report_subject,
    up_subject,
    write_subject,
)
from clustersync.protocol.messages import (
    Batch,
    KindProgress,
    Message,
    ObjectDeleted,
    PatchObject,
    PutObject,
    SyncProgress,
    new_msg_id,
)
from clustersync.runtime.ingester import Ingester

PODS = Kind("", "v1", "pods")
ACCOUNT, CLUSTER = "acme", "east"


def ref(name: str) -> ObjectRef:
    return ObjectRef(PODS, "default", name)


def pod(name: str, step: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"step": str(step)}},
    }


def put(name: str) -> PutObject:
    body = pod(name, 0)
    return PutObject(ref=ref(name), checksum=canonical_checksum(body), object=orjson.dumps(body))


def patch(name: str, step: int) -> Batch:
    """Step ``step`` of ``name`` as our agent sends a lone change: a batch of one patch, whose
    checksum only matches if the patch is applied on top of step ``step - 1``."""
    item = PatchObject(
        ref=ref(name),
        checksum=canonical_checksum(pod(name, step)),
        patch=orjson.dumps({"metadata": {"labels": {"step": str(step)}}}),
    )
    return Batch(kind=PODS, patch_object=(item,))


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def test_overlapping_handlers_keep_each_objects_order_through_an_outage(
    nats_url: str, nats_stream: str
) -> None:
    postgres = start_postgres()
    bus = await open_nats(nats_url, stream=nats_stream, redelivery_delay=0.05)
    store = await open_postgres(postgres.url)
    asked_again: list[Message] = []

    async def on_down(delivery: Delivery) -> None:
        message = decode_envelope(delivery.data).message
        assert message is not None
        asked_again.append(message)  # a GetObject: a patch did not fit the stored copy

    async def publish(msg: Message) -> None:
        await bus.publish(
            up_subject(ACCOUNT, CLUSTER, partition_of(msg)),
            encode_envelope(Envelope(ACCOUNT, CLUSTER, msg)),
        )

    await bus.subscribe(down_subject(ACCOUNT, CLUSTER), "test-agent", on_down)
    ingester = Ingester(bus, store, in_flight=16)
    await ingester.start()
    names = [f"pod-{i}" for i in range(8)]
    steps = 12
    try:
        await publish(Batch(kind=PODS, put_object=tuple(put(n) for n in names)))
        # Interleaved: step s of every pod, then step s + 1, ... all on the kind's partition.
        for step in range(1, steps + 1):
            if step == steps // 2:
                await asyncio.to_thread(postgres.pause)
            for name in names:
                await publish(patch(name, step))

        async def retried() -> bool:
            return ingester.unavailable_retries >= 3

        await until(retried)
        await asyncio.to_thread(postgres.resume)

        async def all_at_last_step() -> bool:
            rows = await store.get_many([ObjectKey(ACCOUNT, CLUSTER, ref(n)) for n in names])
            return len(rows) == len(names) and all(
                orjson.loads(row.object) == pod(key.ref.name, steps) for key, row in rows.items()
            )

        await until(all_at_last_step)
        assert asked_again == []  # every patch found the step before it stored
        assert await store.dead_letters() == []
    finally:
        await ingester.stop()
        await bus.close()
        await store.close()
        postgres.stop()


async def test_backend_writes_keep_each_objects_order_and_reports_their_clusters(
    nats_url: str, nats_stream: str, pg_database_url: str
) -> None:
    bus = await open_nats(nats_url, stream=nats_stream, redelivery_delay=0.05)
    store = await open_postgres(pg_database_url)
    forwarded: list[Message] = []

    async def on_down(delivery: Delivery) -> None:
        message = decode_envelope(delivery.data).message
        assert message is not None
        forwarded.append(message)

    await bus.subscribe(down_subject(ACCOUNT, CLUSTER), "test-agent", on_down)
    ingester = Ingester(bus, store, in_flight=16)
    await ingester.start()
    clusters = ("east", "west")
    reports = 30
    steps = 20
    try:
        for i in range(1, reports + 1):
            for cluster in clusters:
                progress = SyncProgress(kinds=(KindProgress(PODS, i, i, i, i == reports),))
                await bus.publish(
                    report_subject(ACCOUNT, cluster),
                    encode_envelope(Envelope(ACCOUNT, cluster, report=progress)),
                )
        # One object written over and over by the backend, deleted half-way.
        for step in range(1, steps + 1):
            write: Message = (
                ObjectDeleted(ref=ref("settings"), msg_id=new_msg_id())
                if step == steps // 2
                else PutObject(ref=ref("settings"), checksum="",
                               object=orjson.dumps(pod("settings", step)), msg_id=new_msg_id())
            )  # fmt: skip
            await bus.publish(
                write_subject(ACCOUNT, CLUSTER), encode_envelope(Envelope(ACCOUNT, CLUSTER, write))
            )

        async def forwarded_all() -> bool:
            return len(forwarded) == steps

        await until(forwarded_all)
        assert [isinstance(m, ObjectDeleted) for m in forwarded] == [
            step == steps // 2 for step in range(1, steps + 1)
        ]
        assert [
            orjson.loads(m.object)["metadata"]["labels"]["step"]
            for m in forwarded
            if isinstance(m, PutObject)
        ] == [str(step) for step in range(1, steps + 1) if step != steps // 2]
        row = await store.get(ObjectKey(ACCOUNT, CLUSTER, ref("settings")))
        assert row is not None and orjson.loads(row.object) == pod("settings", steps)

        async def last_progress_recorded() -> bool:
            states = {s.cluster: orjson.loads(s.progress) for s in await store.cluster_states()}
            return all(
                states.get(c, {}).get(str(PODS), {}).get("listed") == reports for c in clusters
            )

        await until(last_progress_recorded)
    finally:
        await ingester.stop()
        await bus.close()
        await store.close()
