"""An object larger than the bus takes (NATS's default max_payload is 1 MB; SBOMs are tens of MB)
is parked as a dead letter naming it, and the link and every other object carry on."""

from __future__ import annotations

import orjson

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import CLUSTER_A, CONFIGMAPS, Probe, World, configmap, eventually

    # The world on real NATS and PostgreSQL, already in sync (a fixture, used by name).
    from tests.runtime.test_write_outcomes_nats import synced
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        CLUSTER_A,
        CONFIGMAPS,
        Probe,
        World,
        configmap,
        eventually,
    )
    from test_write_outcomes_nats import synced  # type: ignore[no-redef]  # noqa: F401


async def test_an_object_over_the_bus_limit_is_parked_and_the_rest_syncs(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    agent = cluster.agent
    assert agent is not None
    connections = agent.connections
    too_large = Probe.bad_input("server", "too_large")

    cluster.create(configmap("sbom-sized", blob="x" * 1_500_000))  # over 1 MB on the bus
    cluster.create(configmap("small-after"))

    async def parked() -> bool:
        return any(b"sbom-sized" in dead.data for dead in await synced.store.dead_letters())

    await eventually(parked, timeout=20.0, what="a dead letter naming the oversized object")
    (dead,) = [d for d in await synced.store.dead_letters() if b"sbom-sized" in d.data]
    assert "too large for the bus" in dead.reason
    assert orjson.loads(dead.data)["objects"] == ["/v1/configmaps shop/sbom-sized"]
    assert too_large.delta >= 1

    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "small-after"),
        what="the next object to sync over the same link",
    )
    assert await synced.row(CLUSTER_A, CONFIGMAPS, "shop", "sbom-sized") is None
    assert agent.connections == connections  # the link was never dropped for it
