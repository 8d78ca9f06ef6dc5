"""Backend writes to one object, delivered out of order (a redelivery after a failed first
attempt): the older write must not be carried out after the newer one.

The bus view below hands the ingester the second write first and the first one after it, marked
as a redelivery: what NATS does when the first attempt failed (the store away for a moment) while
the next write to the same object went through.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from clustersync.adapters.bus import Delivery, Handler, Subscription
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.store import ObjectKey, WriteRecord
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.envelope import (
    WRITE_FILTER,
    Envelope,
    decode_envelope,
    down_subject,
    encode_envelope,
    write_subject,
)
from clustersync.protocol.messages import Message, Ping, PutObject, WriteStatus, new_msg_id
from clustersync.runtime.engines import open_store
from clustersync.runtime.ingester import Ingester

CONFIGMAPS = Kind("", "v1", "configmaps")
ACCOUNT, CLUSTER = "acme", "east"
REF = ObjectRef(CONFIGMAPS, "shop", "settings")


def configmap(step: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop"},
        "data": {"step": str(step)},
    }


class FirstWriteLate:
    """The embedded bus, except that the first backend write is handed over only after the
    second one was handled, as a second attempt."""

    def __init__(self, inner: MemoryBus) -> None:
        self.inner = inner
        self.held: Delivery | None = None
        self.handed_late = asyncio.Event()

    async def publish(self, subject: str, data: bytes) -> int:
        return await self.inner.publish(subject, data)

    async def subscribe(
        self, subject_filter: str, durable: str, handler: Handler, *, in_flight: int = 1,
        idle_expiry: float | None = None,
    ) -> Subscription:
        if subject_filter != WRITE_FILTER:
            return await self.inner.subscribe(subject_filter, durable, handler,
                                              in_flight=in_flight, idle_expiry=idle_expiry)

        async def reordering(delivery: Delivery) -> None:
            if self.held is None and not self.handed_late.is_set():
                self.held = delivery  # its first attempt "failed"
                return
            await handler(delivery)
            if self.held is not None:
                late, self.held = self.held, None
                await handler(Delivery(late.subject, late.data, late.seq, late.attempt + 1))
                self.handed_late.set()

        return await self.inner.subscribe(subject_filter, durable, reordering, in_flight=1)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("pg_database_url")
    return url


async def test_an_older_write_redelivered_after_a_newer_one_is_not_carried_out(
    store_url: str,
) -> None:
    bus = FirstWriteLate(MemoryBus(redelivery_delay=0.05))
    store = await open_store(store_url)
    forwarded: list[Message] = []

    async def on_down(delivery: Delivery) -> None:
        message = decode_envelope(delivery.data).message
        assert message is not None
        forwarded.append(message)

    await bus.subscribe(down_subject(ACCOUNT, CLUSTER), "test-agent", on_down)
    ingester = Ingester(bus, store)  # type: ignore[arg-type]
    await ingester.start()
    try:
        ids = []
        for step in (1, 2):
            write = PutObject(ref=REF, checksum="", object=orjson.dumps(configmap(step)),
                              msg_id=new_msg_id())  # fmt: skip
            ids.append(write.msg_id)
            data = encode_envelope(Envelope(ACCOUNT, CLUSTER, write))
            await store.add_write(
                WriteRecord.pending(ACCOUNT, CLUSTER, write, write_subject(ACCOUNT, CLUSTER), data)
            )  # as the API does before it publishes
            await bus.publish(write_subject(ACCOUNT, CLUSTER), data)
        async with asyncio.timeout(10):
            await bus.handed_late.wait()
        # Whatever the ingester forwarded came before this marker on the same down subject.
        await bus.publish(down_subject(ACCOUNT, CLUSTER),
                          encode_envelope(Envelope(ACCOUNT, CLUSTER, Ping())))  # fmt: skip
        async with asyncio.timeout(10):
            while not any(isinstance(m, Ping) for m in forwarded):
                await asyncio.sleep(0.02)
        steps = [orjson.loads(m.object)["data"]["step"] for m in forwarded
                 if isinstance(m, PutObject)]  # fmt: skip
        assert steps == ["2"], f"forwarded to the agent in this order: {steps}"
        row = await store.get(ObjectKey(ACCOUNT, CLUSTER, REF))
        assert row is not None and orjson.loads(row.object) == configmap(2)
        late = await store.get_write(ids[0])
        assert late is not None and late.status is WriteStatus.SUPERSEDED
        assert ids[1] in late.reason
        newer = await store.get_write(ids[1])
        assert newer is not None and newer.status is WriteStatus.PENDING  # the agent's to say
    finally:
        await ingester.stop()
        await bus.close()
        await store.close()
