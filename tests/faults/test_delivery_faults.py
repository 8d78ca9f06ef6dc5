"""Hostile delivery inside the backend: every bus message twice and out of order, and poison
messages on every subject family."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from tests.faults.chaosbus import ChaosBus
from tests.faults.report import record
from tests.faults.topology import CONFIGMAPS, Fleet, configmap
from tests.runtime.harness import CLUSTER_A, World
from tests.runtime.harness import CONFIGMAPS as CM_KIND
from tests.runtime.harness import configmap as shop_configmap
from tests.servers import RunningNats


@pytest.fixture
async def chaotic(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    chaos: list[ChaosBus] = []

    def view(bus: object) -> ChaosBus:
        chaos.append(ChaosBus(bus))  # type: ignore[arg-type]
        return chaos[-1]

    world = World(tmp_path, bus_view=view)
    await world.start()
    try:
        yield world
    finally:
        record(request.node.name, world.checker)
        await world.stop()


async def test_duplicated_and_reordered_delivery(chaotic: World) -> None:
    cluster = await chaotic.add_cluster(CLUSTER_A)
    chaotic.start_agent(CLUSTER_A)
    await chaotic.checker.converged()

    for i in range(5):  # one object changed in quick succession, others created and deleted
        cluster.patch(CM_KIND, "shop", "settings", {"data": {"round": str(i)}})
        cluster.create(shop_configmap(f"burst-{i}"))
    for i in range(0, 5, 2):
        cluster.delete(CM_KIND, "shop", f"burst-{i}")
    cluster.delete(CM_KIND, "shop", "flags")
    await chaotic.checker.converged()
    assert chaos_of(chaotic).overtaken > 0, "the bus view did not reorder anything"


def chaos_of(world: World) -> ChaosBus:
    bus = world.backend.bus
    assert isinstance(bus, ChaosBus)
    return bus


async def parked(fleet: Fleet) -> float:
    """Dead letters the ingester has parked, from its own /metrics."""
    url = (fleet.backend.procs["ingester-0"].health_url or "").replace("/healthz", "/metrics")
    async with fleet.http.get(url) as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("clustersync_dead_letters_total{"))


async def test_poison_messages(scaled: Fleet, own_nats: RunningNats) -> None:
    await scaled.add_cluster("c1")
    await scaled.start_agent("c1")
    await scaled.checker.converged()

    nc = await nats.connect(own_nats.url)
    try:
        js = nc.jetstream()
        for subject in ("cs.up.acme.c1.0", "cs.up.acme.c1.3", "cs.write.acme.c1",
                        "cs.down.acme.c1"):
            for poison in (b"\xff\xfe not json", b'{"event": 999}', b"[]", b"{}"):
                await js.publish(subject, poison)
    finally:
        await nc.close()
    sandbox = scaled.sandboxes["c1"]
    sandbox.create(configmap("after-poison"))
    sandbox.patch("", "v1", "configmaps", "default", "cm-1", {"data": {"v": "after-poison"}})
    await scaled.push("c1", configmap("pushed-after-poison", v="1"), CONFIGMAPS)
    await scaled.checker.converged()
    assert all(proc.running for proc in scaled.backend.procs.values())
    # 12 poison messages reached the ingester (up and write subjects); each is parked.
    assert await parked(scaled) >= 12
