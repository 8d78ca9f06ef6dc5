"""One object the agent cannot handle never stops it.

Objects up to the frame limit (SBOM-sized, tens of MB) sync through list, watch and backend
writes; an object over the limit is skipped with an error log, a metric and a dead letter on the
agent's bounded list, and every other object keeps syncing. (Objects too deep to encode are
refused by the sandbox itself; tests/adapters/kube/test_client_faults.py feeds them to the
informer from a scripted API server.)
"""

from __future__ import annotations

from typing import Any

try:
    from tests.runtime.harness import (
        CLUSTER_A,
        CONFIGMAPS,
        Probe,
        World,
        configmap,
        eventually,
        seed_objects,
    )
except ImportError:
    from harness import (  # type: ignore[no-redef]
        CLUSTER_A,
        CONFIGMAPS,
        Probe,
        World,
        configmap,
        eventually,
        seed_objects,
    )

MIB = 1024 * 1024


def big_configmap(name: str, size: int) -> dict[str, Any]:
    # Quotes and backslashes double when the object travels as a JSON string inside a frame.
    return configmap(name, blob='x"\\' * (size // 3))


def skipped(reason: str) -> Probe:
    return Probe.sample("clustersync_agent_skipped_objects_total", reason=reason)


async def test_an_object_of_tens_of_megabytes_syncs_through_watch(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    assert cluster.agent is not None
    cluster.create(big_configmap("sbom", 12 * MIB))
    cluster.create(configmap("after-sbom", n="1"))

    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "sbom"),
        timeout=60,
        what="the 12 MiB object in the store",
    )
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "after-sbom"),
        what="a later object synced",
    )
    assert cluster.task is not None and not cluster.task.done()


async def test_a_large_object_syncs_through_list(world: World) -> None:
    await world.add_cluster(CLUSTER_A, [*seed_objects(), big_configmap("sbom", 6 * MIB)])
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A, timeout=60)


async def test_a_backend_write_of_tens_of_megabytes_reaches_the_cluster(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    obj = big_configmap("pushed-sbom", 20 * MIB)
    await synced.api_put(CLUSTER_A, obj)

    def applied() -> bool:
        live = cluster.get(CONFIGMAPS, "shop", "pushed-sbom")
        return live is not None and live["data"] == obj["data"]

    await eventually(applied, timeout=60, what="the pushed object in the cluster")
    cluster.create(configmap("after-push"))
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "after-push"),
        timeout=30,
        what="the agent still syncing",
    )
    assert cluster.task is not None and not cluster.task.done()


async def test_an_object_over_the_event_limit_is_a_dead_letter_and_the_rest_syncs(
    world: World,
) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    cluster.kube.max_event_bytes = MIB  # as if the frame limit were configured to 1 MiB
    agent = world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    too_large = skipped("too_large")

    cluster.create(big_configmap("sbom", 2 * MIB))
    cluster.create(configmap("next-one"))

    await eventually(lambda: too_large.delta == 1, what="the large object counted as skipped")
    await eventually(
        lambda: world.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "next-one"),
        what="the next object synced",
    )
    letters = [(d.kind, d.namespace, d.name, d.reason) for d in agent.dead_letters.entries()]
    assert letters == [(CONFIGMAPS, "shop", "sbom", "too_large")]
    assert await world.row(CLUSTER_A, CONFIGMAPS, "shop", "sbom") is None
    assert cluster.task is not None and not cluster.task.done()
