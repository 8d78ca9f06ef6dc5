"""The ingester reads the stored copies a message needs in one go (none for a batch of puts),
answers each item of a batch by what the store holds, and loses nothing when the store fails
in the middle of a run of batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from tests.servers import start_postgres

from clustersync.adapters.bus import Delivery
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.adapters.store.postgres import open_postgres
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.envelope import (
    Envelope,
    decode_envelope,
    down_subject,
    encode_envelope,
    partition_of,
    up_subject,
)
from clustersync.protocol.messages import (
    Batch,
    GetObject,
    Message,
    NewChecksum,
    PatchObject,
    PutObject,
)
from clustersync.runtime.ingester import Ingester

PODS = Kind("", "v1", "pods")
ACCOUNT, CLUSTER = "acme", "east"


def ref(name: str) -> ObjectRef:
    return ObjectRef(PODS, "default", name)


def pod(name: str, image: str = "nginx:1") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }


def put(name: str, image: str = "nginx:1") -> PutObject:
    body = pod(name, image)
    return PutObject(ref=ref(name), checksum=canonical_checksum(body), object=orjson.dumps(body))


async def publish(bus: MemoryBus, msg: Message) -> int:
    return await bus.publish(
        up_subject(ACCOUNT, CLUSTER, partition_of(msg)),
        encode_envelope(Envelope(ACCOUNT, CLUSTER, msg)),
    )


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def test_a_batch_is_answered_item_by_item_from_what_the_store_holds(
    pg_database_url: str,
) -> None:
    store = await open_postgres(pg_database_url)
    bus = MemoryBus(redelivery_delay=0.05)
    replies: list[Message] = []

    async def on_down(delivery: Delivery) -> None:
        message = decode_envelope(delivery.data).message
        assert message is not None
        replies.append(message)

    await bus.subscribe(down_subject(ACCOUNT, CLUSTER), "test-agent", on_down)
    # Held: "same" with the agent's checksum, "changed" with an older one; "unknown" is not held.
    same, changed = put("same"), put("changed")
    for seq, held in enumerate((same, changed), 1):
        row = StoredObject(
            ObjectKey(ACCOUNT, CLUSTER, held.ref), "u", "1", held.checksum, held.object, seq
        )
        assert await store.apply([row]) == 1
    patched = pod("same", image="nginx:2")
    ingester = Ingester(bus, store)
    await ingester.start()
    try:
        batch = Batch(
            kind=PODS,
            new_checksum=(
                NewChecksum(ref=same.ref, checksum=same.checksum),
                NewChecksum(ref=changed.ref, checksum="the-agent-has-another"),
                NewChecksum(ref=ref("unknown"), checksum="anything"),
            ),
            patch_object=(
                PatchObject(
                    ref=same.ref,
                    checksum=canonical_checksum(patched),
                    patch=b'{"spec":{"containers":[{"name":"c","image":"nginx:2"}]}}',
                ),
                # A patch of an object the backend lacks: it asks for it whole (empty base).
                PatchObject(ref=ref("missing"), checksum="x", patch=b'{"spec":{}}'),
            ),
        )
        await publish(bus, batch)
        # The same partition handles messages in order: once this one is answered, every reply
        # to the batch has been sent.
        await publish(bus, Batch(kind=PODS, get_object=(GetObject(ref=same.ref),)))

        async def answered() -> bool:
            return any(isinstance(reply, PutObject) for reply in replies)

        await until(answered)
        assert isinstance(replies[-1], PutObject) and replies[-1].ref == same.ref
        asked = sorted(reply.ref.name for reply in replies[:-1] if isinstance(reply, GetObject))
        assert asked == ["changed", "missing", "unknown"]
        assert len(replies) == 4
        row = await store.get(ObjectKey(ACCOUNT, CLUSTER, same.ref))
        assert row is not None and orjson.loads(row.object) == patched
    finally:
        await ingester.stop()
        await bus.close()
        await store.close()


async def test_a_store_failure_mid_run_delays_the_batches_without_losing_any() -> None:
    postgres = start_postgres()
    bus = MemoryBus(redelivery_delay=0.05)
    store = await open_postgres(postgres.url)
    ingester = Ingester(bus, store, max_attempts=2)
    await ingester.start()
    names = [f"pod-{i}" for i in range(600)]
    try:
        await publish(bus, Batch(kind=PODS, put_object=tuple(put(n) for n in names[:300])))

        async def first_landed() -> bool:
            return len(await store.list(ACCOUNT, CLUSTER)) == 300

        await until(first_landed)
        await asyncio.to_thread(postgres.pause)
        # Published while the database is away: the second half of the puts, then patches of
        # objects of both halves, in the same partition (batches of one kind share one).
        await publish(bus, Batch(kind=PODS, put_object=tuple(put(n) for n in names[300:])))
        changed = {name: pod(name, image="nginx:2") for name in (names[0], names[599])}
        patches = tuple(
            PatchObject(
                ref=ref(name),
                checksum=canonical_checksum(body),
                patch=b'{"spec":{"containers":[{"name":"c","image":"nginx:2"}]}}',
            )
            for name, body in changed.items()
        )
        await publish(bus, Batch(kind=PODS, patch_object=patches))

        async def retried() -> bool:
            return ingester.unavailable_retries >= 3  # far more than max_attempts

        await until(retried)
        await asyncio.to_thread(postgres.resume)

        async def all_landed() -> bool:
            rows = await store.list(ACCOUNT, CLUSTER)
            return len(rows) == 600 and all(
                orjson.loads(r.object) == changed.get(r.key.ref.name, pod(r.key.ref.name))
                for r in rows
            )

        await until(all_landed)
        assert await store.dead_letters() == []
    finally:
        await ingester.stop()
        await bus.close()
        await store.close()
        postgres.stop()
