"""The harness's ``World.quiesce``: it returns only once a change has gone all the way, so a test
may assert right after it without polling (and assert that nothing more happened)."""

from __future__ import annotations

from collections.abc import Awaitable

import orjson
import pytest

try:
    from tests.runtime.harness import (
        CLUSTER_A,
        CONFIGMAPS,
        DEPLOYMENTS,
        World,
        configmap,
        eventually,
    )
except ImportError:
    from harness import (  # type: ignore[no-redef]
        CLUSTER_A,
        CONFIGMAPS,
        DEPLOYMENTS,
        World,
        configmap,
        eventually,
    )


HELD = 0.5  # seconds the coalescer holds a change made right after another one


async def stored_data(world: World, name: str) -> dict[str, str] | None:
    row = await world.row(CLUSTER_A, CONFIGMAPS, "shop", name)
    if row is None:
        return None
    data: dict[str, str] = orjson.loads(row.object).get("data", {})
    return data


async def test_a_change_in_the_cluster_is_stored_when_quiesce_returns(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    cluster.patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 5}})
    cluster.delete(CONFIGMAPS, "shop", "flags")
    await synced.quiesce(CLUSTER_A)
    assert await synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web")
    assert await synced.row(CLUSTER_A, CONFIGMAPS, "shop", "flags") is None


async def test_quiesce_waits_for_a_change_the_coalescer_holds(world: World) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A, coalesce_quiet=HELD, coalesce_max_wait=2 * HELD)
    await world.wait_synced(CLUSTER_A)

    cluster.patch(CONFIGMAPS, "shop", "settings", {"data": {"currency": "GBP"}})  # at once
    await eventually(
        lambda: _is(stored_data(world, "settings"), {"currency": "GBP"}), what="the first change"
    )
    # Sent less than HELD seconds after the first: the coalescer holds it for HELD seconds.
    cluster.patch(CONFIGMAPS, "shop", "settings", {"data": {"currency": "JPY"}})
    await world.quiesce(CLUSTER_A)
    assert await stored_data(world, "settings") == {"currency": "JPY"}


async def _is(pending: Awaitable[object], expected: object) -> bool:
    return await pending == expected


async def test_a_backend_write_has_gone_both_ways_when_quiesce_returns(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    await synced.api_put(CLUSTER_A, configmap("pushed", note="from the backend"))
    await synced.quiesce(CLUSTER_A)
    live = cluster.get(CONFIGMAPS, "shop", "pushed")
    assert live is not None and live["data"] == {"note": "from the backend"}
    # The store holds the cluster's version (uid, resourceVersion), reported back by the agent.
    assert await synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "pushed")


async def test_quiesce_says_what_is_not_idle(synced: World) -> None:
    await synced.stop_agent(CLUSTER_A)
    with pytest.raises(AssertionError, match="no agent running"):
        await synced.quiesce(CLUSTER_A, timeout=0.2)
