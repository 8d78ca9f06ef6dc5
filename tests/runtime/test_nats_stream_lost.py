"""A running ingester on NATS keeps applying changes after the JetStream stream is deleted and
recreated by an operator, or lost with the server's store: the new stream's sequence starts at 1
again, and without an epoch in the version every later change would be refused as stale."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from clustersync.adapters.bus.nats import NatsBus, open_nats
from clustersync.adapters.store import ObjectKey
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.envelope import Envelope, encode_envelope, write_subject
from clustersync.protocol.messages import Message, ObjectDeleted, PutObject
from clustersync.runtime.ingester import Ingester

try:
    from tests.servers import RunningNats, start_nats
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from servers import RunningNats, start_nats  # type: ignore[no-redef]

ACCOUNT, CLUSTER = "acct", "cl"
CONFIGMAPS = Kind("", "v1", "configmaps")
STREAM = "CLUSTERSYNC"


def ref(i: int) -> ObjectRef:
    return ObjectRef(CONFIGMAPS, "default", f"cm-{i}")


def put(i: int, version: int) -> PutObject:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"cm-{i}",
            "namespace": "default",
            "uid": f"uid-{i}",
            "resourceVersion": str(version),
        },
        "data": {"v": str(version)},
    }
    return PutObject(ref=ref(i), checksum="", object=orjson.dumps(obj))


async def send(bus: NatsBus, msg: Message) -> None:
    await bus.publish(
        write_subject(ACCOUNT, CLUSTER), encode_envelope(Envelope(ACCOUNT, CLUSTER, msg))
    )


async def until(check: Callable[[], Coroutine[Any, Any, bool]], what: str, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def recreate_stream(server: RunningNats) -> None:
    """An operator deletes the stream and creates it again from the same definition."""
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        config = (await js.stream_info(STREAM)).config
        await js.delete_stream(STREAM)
        await js.add_stream(config)
    finally:
        await nc.close()


async def lose_the_store(server: RunningNats) -> None:
    """The server comes back without its JetStream store: no stream, no consumers."""
    await asyncio.to_thread(server.stop)
    shutil.rmtree(server.store_dir)
    server.store_dir.mkdir()
    await asyncio.to_thread(server._launch)


@pytest.mark.parametrize("disrupt", [recreate_stream, lose_the_store], ids=["recreated", "lost"])
async def test_changes_after_the_stream_is_replaced_reach_the_store(
    tmp_path: Path, disrupt: Callable[[RunningNats], Coroutine[Any, Any, None]]
) -> None:
    server = await asyncio.to_thread(start_nats, tmp_path / "nats")
    store = await open_sqlite(f"sqlite:///{tmp_path}/store.db")
    ingester_bus = await open_nats(server.url, stream=STREAM, redelivery_delay=0.1)
    api_bus = await open_nats(server.url, stream=STREAM)  # another process: the API
    ingester = Ingester(ingester_bus, store)
    await ingester.start()
    try:
        for version in (1, 2):  # enough messages that a restarted counter stays below them
            for i in range(10):
                await send(api_bus, put(i, version))

        async def stored_versions() -> dict[str, str]:
            rows = await store.list(ACCOUNT, CLUSTER)
            # Backend writes are stored as written (the cluster's resourceVersion comes later,
            # from the agent): the data says which write a row holds.
            return {row.key.ref.name: orjson.loads(row.object)["data"]["v"] for row in rows}

        async def all_at_two() -> bool:
            return await stored_versions() == {f"cm-{i}": "2" for i in range(10)}

        await until(all_at_two, "the first writes", 20)

        await disrupt(server)

        await send(api_bus, put(0, 3))
        await send(api_bus, ObjectDeleted(ref=ref(1)))
        await send(api_bus, put(10, 1))

        async def converged() -> bool:
            versions = await stored_versions()
            return versions.get("cm-0") == "3" and "cm-1" not in versions and "cm-10" in versions

        await until(converged, "the changes made after the stream was replaced", 30)
        assert await store.get(ObjectKey(ACCOUNT, CLUSTER, ref(2))) is not None
        assert ingester.stale.total == 0
    finally:
        await ingester.stop()
        await api_bus.close()
        await ingester_bus.close()
        await store.close()
        await asyncio.to_thread(server.stop)
