"""One tenant's flood neither evicts nor delays another cluster's queued backend writes.

Cluster A's agent is offline with pushes queued for it. Cluster B connects with our protocol and
never acknowledges anything, while sending far more frames than its bound: its replies pile up,
then its own requests, and the server pushes back on B alone (close 1013). A's pushes stay
queued, a new push for A is accepted at once, and A gets all of them when its agent returns.
"""

from __future__ import annotations

import aiohttp

from clustersync.model import ObjectRef
from clustersync.protocol.codec import encode
from clustersync.protocol.envelope import down_subject, up_subject
from clustersync.protocol.messages import ACK_PROTOCOL, NewChecksum, new_msg_id

try:
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        TOKENS,
        World,
        configmap,
        eventually,
    )
except ImportError:
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        TOKENS,
        World,
        configmap,
        eventually,
    )

BOUND = 100  # per cluster space, small so that the flood reaches it quickly


def headers(cluster: str) -> dict[str, str]:
    return {"X-API-KEY": TOKENS[cluster], "X-API-ACCOUNT": ACCOUNT, "X-API-CLUSTER": cluster}


async def test_a_flooding_tenant_cannot_evict_or_delay_another_clusters_writes(
    world: World,
) -> None:
    world.bus.max_per_cluster = BOUND
    world.bus.publish_timeout = 0.2
    a = await world.add_cluster(CLUSTER_A, objects=[])
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    await world.stop_agent(CLUSTER_A)
    await world.wait_disconnected(CLUSTER_A)

    for i in range(3):
        await world.api_put(CLUSTER_A, configmap(f"queued-{i}", namespace="default"))
    down_a = down_subject(ACCOUNT, CLUSTER_A)
    await eventually(lambda: world.bus.queued(down_a) == 3, what="A's pushes queued")

    async with aiohttp.ClientSession() as http, http.ws_connect(
        world.backend.ws_url, headers=headers(CLUSTER_B), protocols=[ACK_PROTOCOL]
    ) as flooder:
        assert flooder.protocol == ACK_PROTOCOL
        sent = 0
        for i in range(5 * BOUND):
            ref = ObjectRef(CONFIGMAPS, "default", f"flood-{i}")
            try:
                await flooder.send_bytes(
                    encode(NewChecksum(ref=ref, checksum="0" * 64, msg_id=new_msg_id()))
                )
            except ConnectionResetError:
                break
            sent += 1
        # B's replies (GetObject) are never acknowledged: its down queue fills, then its up
        # queue, and the server closes B's connection with "try again later".
        async for _ in flooder:
            pass
        assert flooder.close_code == 1013, (flooder.close_code, sent)
    assert world.bus.queued(down_subject(ACCOUNT, CLUSTER_B)) == BOUND
    assert world.bus.queued(up_subject(ACCOUNT, CLUSTER_B)) == BOUND

    # A is untouched: nothing evicted, and a new push is accepted at once.
    assert world.bus.queued(down_a) == 3
    assert world.bus.dropped == 0
    await world.api_put(CLUSTER_A, configmap("queued-3", namespace="default"))  # 202, not 429
    await eventually(lambda: world.bus.queued(down_a) == 4, what="the new push queued for A")

    world.start_agent(CLUSTER_A)
    for i in range(4):
        await eventually(
            lambda i=i: a.get(CONFIGMAPS, "default", f"queued-{i}") is not None,
            what=f"queued-{i} in cluster A",
        )
    await world.wait_synced(CLUSTER_A)
