"""Our agent against a server that speaks only kubescape's protocol (no subprotocol, so no
acks, no inventory requests, no compression): the classic checksum sweep and the server's
inventory push must carry every flow."""

from __future__ import annotations

try:
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        DEPLOYMENTS,
        Probe,
        World,
        configmap,
        eventually,
    )
except ImportError:
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        DEPLOYMENTS,
        Probe,
        World,
        configmap,
        eventually,
    )


async def test_every_flow_with_a_kubescape_style_server(world: World) -> None:
    world.backend.server.extensions = False
    announced = Probe.messages("agent", "out", "new_checksum")
    asked = Probe.messages("server", "out", "get_object")
    cluster = await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    conn = world.backend.server.connections[(ACCOUNT, CLUSTER_A)]
    assert not conn.acks and not conn.ws.compress  # plain kubescape protocol
    assert announced.delta > 0 and asked.delta > 0  # checksum first, then the backend asks

    # Flow 1 (modified), flow 2, flow 3 and flow 4 on the plain protocol.
    cluster.patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 7}})
    cluster.delete(CONFIGMAPS, "shop", "settings")
    await world.api_put(CLUSTER_A, configmap("pushed", via="kubescape-protocol"))
    await eventually(
        lambda: cluster.get(CONFIGMAPS, "shop", "pushed") is not None, what="the backend write"
    )
    await world.wait_synced(CLUSTER_A)
    await world.api_delete(CLUSTER_A, CONFIGMAPS, "shop", "pushed")
    await eventually(
        lambda: cluster.get(CONFIGMAPS, "shop", "pushed") is None, what="the backend delete"
    )
    await world.wait_synced(CLUSTER_A)

    # Reconciliation on connect comes from the server's push of its inventory.
    await world.stop_agent(CLUSTER_A)
    await world.wait_disconnected(CLUSTER_A)
    cluster.delete(CONFIGMAPS, "shop", "flags")
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    assert await world.row(CLUSTER_A, CONFIGMAPS, "shop", "flags") is None
