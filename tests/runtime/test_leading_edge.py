"""A lone change goes out at once (leading edge); changes right after it wait and coalesce.

The agent runs with a 30 s quiet period: without the leading edge the first change would take
30 s to reach the store, far beyond the waits below.
"""

from __future__ import annotations

import orjson

try:
    from tests.runtime.harness import CLUSTER_A, CONFIGMAPS, World, eventually
except ImportError:
    from harness import CLUSTER_A, CONFIGMAPS, World, eventually  # type: ignore[no-redef]

from clustersync.runtime.agent import Agent

QUIET = 30.0


async def start_slow_agent(world: World) -> Agent:
    await world.add_cluster(CLUSTER_A)
    agent = world.start_agent(CLUSTER_A, coalesce_quiet=QUIET, coalesce_max_wait=2 * QUIET)
    await world.wait_synced(CLUSTER_A)
    return agent


async def stored_value(world: World, name: str) -> str | None:
    row = await world.row(CLUSTER_A, CONFIGMAPS, "shop", name)
    if row is None or row.object is None:
        return None
    value: str | None = orjson.loads(row.object).get("data", {}).get("v")
    return value


async def test_a_lone_change_is_sent_without_waiting_for_quiet(world: World) -> None:
    await start_slow_agent(world)
    cluster = world.clusters[CLUSTER_A]
    cluster.create({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "lone", "namespace": "shop"}, "data": {"v": "1"}})
    assert await eventually(lambda: stored_value(world, "lone"), timeout=10.0,
                            what="the new object in the store") == "1"
    # Another object's first change is just as quick.
    cluster.patch(CONFIGMAPS, "shop", "settings", {"data": {"v": "a"}})
    await eventually(lambda: _equals(stored_value(world, "settings"), "a"), timeout=10.0,
                     what="the changed object in the store")


async def test_changes_right_after_a_send_coalesce(world: World) -> None:
    agent = await start_slow_agent(world)
    cluster = world.clusters[CLUSTER_A]
    cluster.create({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "busy", "namespace": "shop"}, "data": {"v": "1"}})
    await eventually(lambda: _equals(stored_value(world, "busy"), "1"), timeout=10.0,
                     what="the first version in the store")
    cluster.patch(CONFIGMAPS, "shop", "busy", {"data": {"v": "2"}})
    last = cluster.patch(CONFIGMAPS, "shop", "busy", {"data": {"v": "3"}})
    key = (CONFIGMAPS, "shop", "busy")
    cache = agent.informers[CONFIGMAPS].cache
    await eventually(
        lambda: cache.resource_version(("shop", "busy")) == last["metadata"]["resourceVersion"],
        timeout=10.0, what="the agent to see version 3",
    )
    # Both later changes wait in the coalescer as one entry, not sent yet.
    assert key in agent.coalescer
    assert len(agent.coalescer) == 1
    assert await stored_value(world, "busy") == "1"


async def _equals(value: object, expected: str) -> bool:
    return await value == expected  # type: ignore[misc]
