"""An object larger than the bus takes (NATS's default max_payload is 1 MB; SBOMs are tens of MB)
is parked as a dead letter naming it, and the link and every other object carry on."""

from __future__ import annotations

import aiohttp
import orjson

from clustersync.adapters.bus import Delivery
from clustersync.model import ObjectRef
from clustersync.protocol.codec import encode
from clustersync.protocol.envelope import decode_envelope, subject_token
from clustersync.protocol.messages import CLUSTERSYNC_PROTOCOLS, Batch, PutObject

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        TOKENS,
        Probe,
        World,
        configmap,
        eventually,
    )

    # The world on real NATS and PostgreSQL, already in sync (a fixture, used by name).
    from tests.runtime.test_write_outcomes_nats import synced
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        TOKENS,
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


async def test_a_batch_over_the_bus_limit_goes_out_in_halves(synced: World) -> None:
    """Objects that each fit on the bus, in one frame that does not (their JSON is mostly
    quotes, which the frame escapes again): the server publishes the batch in halves, halved
    again while too large, and parks nothing."""
    too_large = Probe.bad_input("server", "too_large")
    seen: list[list[str]] = []  # the objects of each bus message of cluster B

    async def record(delivery: Delivery) -> None:
        message = decode_envelope(delivery.data).message
        items = message.unrolled() if isinstance(message, Batch) else (message,)
        seen.append([m.ref.name for m in items if isinstance(m, PutObject)])

    up = f"cs.up.{subject_token(ACCOUNT)}.{subject_token(CLUSTER_B)}.*"
    await synced.bus.subscribe(up, "test-halves", record)
    names = [f"quoted-{i}" for i in range(3)]
    puts = tuple(
        PutObject(
            ref=ObjectRef(CONFIGMAPS, "shop", name),
            checksum=f"c{i}",
            object=orjson.dumps(configmap(name, blob='"' * 100_000)),
            msg_id=f"m{i}",
        )
        for i, name in enumerate(names)
    )
    frame = encode(Batch(kind=CONFIGMAPS, put_object=puts, msg_id="b"))
    assert len(frame) > 1024 * 1024  # over NATS's default max_payload
    headers = {"X-API-KEY": TOKENS[CLUSTER_B], "X-API-ACCOUNT": ACCOUNT,
               "X-API-CLUSTER": CLUSTER_B}
    async with aiohttp.ClientSession() as http, http.ws_connect(
        synced.backend.ws_url + "/synchronizer", headers=headers, protocols=CLUSTERSYNC_PROTOCOLS
    ) as ws:
        await ws.send_bytes(frame)
        await eventually(lambda: len(seen) >= 2, what="the batch on the bus in parts")
    assert seen == [names[:1], names[1:]]  # one part of one object, one of two
    assert too_large.delta == 0
