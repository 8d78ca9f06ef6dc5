"""The whole system over the Pulsar bus in kubescape's layout: sandbox cluster, agent, server,
ingester, SQLite and API, with every bus message on one topic of the stand-in broker (no real
broker can run here). Checked by the independent convergence checker, not our own checksums."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clustersync.adapters.bus.pulsar import PulsarBus
from clustersync.adapters.bus.pulsar_layout import KubescapeLayout, Layout, SplitLayout

try:  # `python -m pytest` from the repo root
    from tests.contracts import load_contract
    from tests.runtime.harness import ACCOUNT, CLUSTER_A, CONFIGMAPS, World, configmap, eventually
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        World,
        configmap,
        eventually,
    )

    from contracts import load_contract  # type: ignore[no-redef]

_standin = load_contract(
    "pulsar_standin", Path(__file__).parents[1] / "adapters" / "bus" / "pulsar_standin.py"
)
TOPIC = "persistent://armo/kubescape/synchronizer"
SERVER_KEY = "SynchronizerServerProducer"


async def pulsar_world(tmp_path: Path, layout: Layout) -> AsyncIterator[tuple[World, Any]]:
    broker = _standin.FakeBroker()
    bus = PulsarBus(_standin.FakeClient(broker), layout=layout, redelivery_delay=0.05)
    await bus.start()
    world = World(tmp_path, bus_view=lambda _memory_bus: bus)
    await world.start()
    try:
        yield world, broker
    finally:
        await world.stop()
        await bus.close()


@pytest.fixture
async def kubescape_world(tmp_path: Path) -> AsyncIterator[tuple[World, Any]]:
    async for started in pulsar_world(tmp_path, KubescapeLayout(TOPIC)):
        yield started


@pytest.fixture
async def split_world(tmp_path: Path) -> AsyncIterator[tuple[World, Any]]:
    async for started in pulsar_world(tmp_path, SplitLayout("persistent://public/default/cs")):
        yield started


async def sync_both_ways(world: World) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)

    # Changes in the cluster: a modify and a delete reach the store.
    cluster.patch(CONFIGMAPS, "shop", "settings", {"data": {"currency": "CHF"}})
    cluster.delete(CONFIGMAPS, "shop", "flags")
    await world.wait_synced(CLUSTER_A)

    # A backend write reaches the cluster.
    await world.api_put(CLUSTER_A, configmap("from-backend", note="pushed"))
    live = await eventually(
        lambda: cluster.get(CONFIGMAPS, "shop", "from-backend"), what="the pushed ConfigMap"
    )
    assert live["data"] == {"note": "pushed"}
    await world.wait_synced(CLUSTER_A)


async def test_a_cluster_syncs_both_ways_over_one_kubescape_topic(
    kubescape_world: tuple[World, Any],
) -> None:
    world, broker = kubescape_world
    await sync_both_ways(world)
    # All of it went over the one topic, the key telling the direction.
    entries = broker.entries(TOPIC)
    assert list(broker.topics) == [TOPIC]
    keys = {entry.key for entry in entries}
    assert SERVER_KEY in keys  # agent to backend
    assert f"{ACCOUNT}/{CLUSTER_A}" in keys  # backend to agent
    up = [e for e in entries if e.key == SERVER_KEY and "event" in e.properties]
    assert up and all(e.properties["account"] == ACCOUNT for e in up)


async def test_a_cluster_syncs_both_ways_over_the_split_layout(
    split_world: tuple[World, Any],
) -> None:
    world, broker = split_world
    await sync_both_ways(world)
    assert broker.entries("persistent://public/default/cs-down")  # the backend's answers
