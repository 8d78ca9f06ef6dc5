"""Write outcomes in the production kinds of parts: NATS JetStream and PostgreSQL (each a real
server started by the test session), with a sandbox cluster and an agent over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clustersync.adapters.bus.nats import open_nats
from clustersync.adapters.store.postgres import open_postgres
from clustersync.runtime.backend import Backend

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import CLUSTER_A, CONFIGMAPS, World, configmap, eventually
    from tests.runtime.test_write_outcomes import delete, outcome, push
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import CLUSTER_A, CONFIGMAPS, World, configmap, eventually  # type: ignore
    from test_write_outcomes import delete, outcome, push  # type: ignore[no-redef]


class ProductionWorld(World):
    """The harness's world on NATS and PostgreSQL instead of the embedded bus and SQLite."""

    def __init__(self, tmp_path: Path, nats_url: str, stream: str, pg_url: str) -> None:
        super().__init__(tmp_path)
        self.nats_url, self.stream, self.pg_url = nats_url, stream, pg_url

    async def start(self) -> None:
        await super().start()
        await self.backend.stop()
        await self.bus.close()
        await self.store.close()
        self.bus = await open_nats(  # type: ignore[assignment]
            self.nats_url, stream=self.stream, redelivery_delay=0.05
        )
        self.store = await open_postgres(self.pg_url)  # type: ignore[assignment]
        self.backend = Backend(self.bus, self.store, self.backend.tokens, heartbeat=self.heartbeat)
        await self.backend.start()


@pytest.fixture
async def synced(
    tmp_path: Path, nats_url: str, nats_stream: str, pg_database_url: str
) -> AsyncIterator[World]:
    world = ProductionWorld(tmp_path, nats_url, nats_stream, pg_database_url)
    await world.start()
    try:
        await world.add_cluster(CLUSTER_A)
        world.start_agent(CLUSTER_A)
        await world.wait_synced(CLUSTER_A)
        yield world
    finally:
        await world.stop()


async def test_outcomes_travel_over_nats_into_postgres(synced: World) -> None:
    status, _, accepted = await push(synced, CLUSTER_A, configmap("over-nats"))
    assert status == 202, accepted
    assert (await outcome(synced, accepted))["status"] == "applied"

    status, _, accepted = await push(synced, CLUSTER_A, configmap("lost", "nowhere"))
    assert status == 202, accepted
    refused = await outcome(synced, accepted)
    assert refused["status"] == "refused"
    assert 'namespaces "nowhere" not found' in refused["reason"]

    async def gone() -> bool:
        return await synced.row(CLUSTER_A, CONFIGMAPS, "nowhere", "lost") is None

    await eventually(gone, what="the refused object to leave the store")

    status, _, accepted = await delete(synced, CLUSTER_A, "/v1/configmaps", "shop", "never-was")
    assert status == 202, accepted
    assert (await outcome(synced, accepted))["status"] == "not_found"
