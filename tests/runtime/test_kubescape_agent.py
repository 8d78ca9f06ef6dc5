"""Our backend as a kubescape agent sees it, through a hand-driven websocket speaking only
kubescape's protocol: reconciliation by resource version, and depth growing by one per hop."""

from __future__ import annotations

import asyncio

import aiohttp

from clustersync.model import ObjectRef
from clustersync.protocol.codec import decode, encode
from clustersync.protocol.messages import BATCH_RECONCILIATION, Batch, GetObject, NewChecksum

try:
    from tests.runtime.harness import ACCOUNT, CLUSTER_A, CONFIGMAPS, PODS, TOKENS, World
except ImportError:
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        PODS,
        TOKENS,
        World,
    )

KUBESCAPE_HEADERS = {
    "X-API-KEY": TOKENS[CLUSTER_A],
    "X-API-ACCOUNT": ACCOUNT,
    "X-API-CLUSTER": CLUSTER_A,
    "X-HELM-VERSION": "v1.20.0",
    "X-SYNCHRONIZER-VERSION": "v0.0.77",
    "X-GIT-VERSION": "v1.30.0",
    "X-CLOUD-PROVIDER": "",
}


async def _reconciliation_batches(
    ws: aiohttp.ClientWebSocketResponse, kinds: set[object], timeout: float = 15.0
) -> dict[object, Batch]:
    batches: dict[object, Batch] = {}
    async with asyncio.timeout(timeout):
        while not kinds <= batches.keys():
            frame = await ws.receive()
            assert frame.type == aiohttp.WSMsgType.BINARY, f"unexpected frame {frame!r}"
            msg = decode(frame.data)
            if isinstance(msg, Batch) and msg.batch_type == BATCH_RECONCILIATION:
                batches[msg.kind] = msg
    return batches


async def test_a_kubescape_agent_gets_the_stored_resource_versions(synced: World) -> None:
    await synced.stop_agent(CLUSTER_A)
    await synced.wait_disconnected(CLUSTER_A)
    cluster = synced.clusters[CLUSTER_A]
    async with synced.http.ws_connect(
        synced.backend.ws_url + "/synchronizer", headers=KUBESCAPE_HEADERS
    ) as ws:
        batches = await _reconciliation_batches(ws, {CONFIGMAPS, PODS})
    checked = 0
    for kind in (CONFIGMAPS, PODS):
        assert batches[kind].new_checksum, f"no {kind} in the reconciliation"
        for item in batches[kind].new_checksum:
            live = cluster.get(kind, item.ref.namespace, item.ref.name)
            assert live is not None, f"{item.ref} is not in the cluster"
            # What a kubescape agent compares: the live version, as an integer.
            assert item.resource_version == int(live["metadata"]["resourceVersion"]) > 0
            row = await synced.row(CLUSTER_A, kind, item.ref.namespace, item.ref.name)
            assert row is not None and row.resource_version == live["metadata"]["resourceVersion"]
            checked += 1
    assert checked >= 2


async def test_depth_grows_by_one_per_hop_as_through_kubescapes_server(synced: World) -> None:
    # Agent (1) -> server to bus (2) -> the ingester's reply (3) -> server to agent (4): what a
    # kubescape agent sees through kubescape's own server, which adds one on each bridge hop.
    await synced.stop_agent(CLUSTER_A)
    await synced.wait_disconnected(CLUSTER_A)
    ref = ObjectRef(CONFIGMAPS, "shop", "not-stored-yet")
    async with synced.http.ws_connect(
        synced.backend.ws_url + "/synchronizer", headers=KUBESCAPE_HEADERS
    ) as ws:
        await ws.send_bytes(encode(NewChecksum(ref=ref, checksum="c0ffee", depth=1, msg_id="m-1")))
        async with asyncio.timeout(15.0):
            while True:
                frame = await ws.receive()
                assert frame.type == aiohttp.WSMsgType.BINARY, f"unexpected frame {frame!r}"
                msg = decode(frame.data)
                if isinstance(msg, GetObject) and msg.ref == ref:
                    break
    assert (msg.depth, msg.msg_id) == (4, "m-1")
