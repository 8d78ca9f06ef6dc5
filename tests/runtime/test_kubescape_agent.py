"""Our backend as a kubescape agent sees it, through a hand-driven websocket speaking only
kubescape's protocol: reconciliation by resource version, and depth growing by one per hop."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from clustersync.model import ObjectRef
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.codec import decode, encode
from clustersync.protocol.mergepatch import apply_patch, create_patch
from clustersync.protocol.messages import (
    BATCH_RECONCILIATION,
    Batch,
    GetObject,
    NewChecksum,
    PatchObject,
)

try:
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        PODS,
        TOKENS,
        World,
        eventually,
    )
except ImportError:
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        PODS,
        TOKENS,
        World,
        eventually,
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


async def _next_get_object(ws: aiohttp.ClientWebSocketResponse, ref: ObjectRef) -> GetObject:
    async with asyncio.timeout(15.0):
        while True:
            frame = await ws.receive()
            assert frame.type == aiohttp.WSMsgType.BINARY, f"unexpected frame {frame!r}"
            msg = decode(frame.data)
            if isinstance(msg, GetObject) and msg.ref == ref:
                return msg


async def test_a_patch_for_an_object_the_backend_lacks_is_recovered_in_one_round(
    world: World,
) -> None:
    # A kubescape agent holds a shadow the backend never stored (say, the store was restored from
    # a backup). Its patch cannot verify; with the empty base it gets back, it sends the whole
    # object as a patch, which the backend stores: no loop to the depth limit.
    ref = ObjectRef(CONFIGMAPS, "shop", "restored")
    shadow = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "restored", "namespace": "shop", "resourceVersion": "7"},
        "data": {"a": "1"},
    }
    live = {
        **shadow,
        "metadata": {**shadow["metadata"], "resourceVersion": "8"},
        "data": {"a": "2", "b": None},
    }
    async with world.http.ws_connect(
        world.backend.ws_url + "/synchronizer", headers=KUBESCAPE_HEADERS
    ) as ws:
        patch = create_patch(shadow, live)
        checksum = canonical_checksum(apply_patch(shadow, patch))
        await ws.send_bytes(
            encode(
                PatchObject(
                    ref=ref, checksum=checksum, patch=orjson.dumps(patch), depth=1, msg_id="p"
                )
            )
        )
        ask = await _next_get_object(ws, ref)
        assert ask.base_object is not None and orjson.loads(ask.base_object) == {}
        base = orjson.loads(ask.base_object)  # kubescape's agent patches against the base
        patch = create_patch(base, live)
        checksum = canonical_checksum(apply_patch(base, patch))
        await ws.send_bytes(
            encode(
                PatchObject(
                    ref=ref,
                    checksum=checksum,
                    patch=orjson.dumps(patch),
                    depth=ask.depth + 1,
                    msg_id="p",
                )
            )
        )

        async def stored() -> bool:
            row = await world.row(CLUSTER_A, CONFIGMAPS, "shop", "restored")
            return row is not None and row.checksum == checksum

        await eventually(stored, what="the whole object stored after one round")
    row = await world.row(CLUSTER_A, CONFIGMAPS, "shop", "restored")
    assert row is not None and orjson.loads(row.object)["data"] == {"a": "2"}


async def test_objects_from_kubescapes_http_endpoint_are_stored(world: World) -> None:
    # kubescape's agent forwards a node-agent POST as a PatchObject carrying the whole object and
    # no checksum; nothing could verify it, and its sender never answers a GetObject.
    ref = ObjectRef(CONFIGMAPS, "shop", "from-node-agent")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "from-node-agent", "namespace": "shop"},
        "data": {"k": "v"},
    }
    async with world.http.ws_connect(
        world.backend.ws_url + "/synchronizer", headers=KUBESCAPE_HEADERS
    ) as ws:
        await ws.send_bytes(
            encode(PatchObject(ref=ref, checksum="", patch=orjson.dumps(body), depth=1, msg_id="h"))
        )

        async def stored() -> bool:
            row = await world.row(CLUSTER_A, CONFIGMAPS, "shop", "from-node-agent")
            return row is not None and orjson.loads(row.object) == body

        await eventually(stored, what="the posted object stored")
