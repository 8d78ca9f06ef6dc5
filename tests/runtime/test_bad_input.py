"""Garbage on the websocket and on the bus is counted and skipped, never fatal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from clustersync.model import ObjectRef
from clustersync.protocol.codec import decode, encode
from clustersync.protocol.envelope import (
    Envelope,
    down_subject,
    encode_envelope,
    partition_of,
    up_subject,
)
from clustersync.protocol.messages import GetObject, NewChecksum, PutObject, new_msg_id

try:
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        STATEFULSETS,
        TOKENS,
        Probe,
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
        STATEFULSETS,
        TOKENS,
        Probe,
        World,
        configmap,
        eventually,
    )


def kubescape_headers(cluster: str, token: str | None = None) -> dict[str, str]:
    return {
        "X-API-KEY": token if token is not None else TOKENS[cluster],
        "X-API-ACCOUNT": ACCOUNT,
        "X-API-CLUSTER": cluster,
        "X-HELM-VERSION": "v1.20.0",
        "X-SYNCHRONIZER-VERSION": "v0.0.77",
        "X-GIT-VERSION": "v1.30.0",
        "X-CLOUD-PROVIDER": "",
    }


@pytest.fixture
async def raw_b(synced: World) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A hand-driven websocket posing as cluster B's agent (cluster A's agent keeps running)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(
        synced.backend.ws_url + "/synchronizer", headers=kubescape_headers(CLUSTER_B)
    ) as ws:
        await eventually(lambda: synced.connected(CLUSTER_B), what="raw client registered")
        yield ws


def _wire_kind(resource: str) -> dict[str, str]:
    return {"Group": "", "Version": "v1", "Resource": resource}


BAD_FRAMES = [
    pytest.param(b"{this is not json", "malformed", id="not-json"),
    pytest.param(
        orjson.dumps({"Event": 42, "Depth": 1, "MsgId": "m", "Kind": _wire_kind("configmaps"),
                      "Name": "x", "Namespace": "shop"}),
        "unknown_event",
        id="unknown-event",
    ),
    pytest.param(
        orjson.dumps({"Event": 0, "Depth": 9, "MsgId": "m", "Kind": _wire_kind("configmaps"),
                      "Name": "x", "Namespace": "shop", "Checksum": "abc"}),
        "too_deep",
        id="depth-9",
    ),
    pytest.param(
        orjson.dumps({"Event": 0, "Depth": 1, "MsgId": "m", "Kind": _wire_kind("Not Valid!"),
                      "Name": "x", "Namespace": "shop", "Checksum": "abc"}),
        "bad_kind",
        id="bad-kind",
    ),
]


async def _next_message(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0):
    async with asyncio.timeout(timeout):  # not asyncio.wait_for: it can swallow cancellation
        frame = await ws.receive()
    assert frame.type == aiohttp.WSMsgType.BINARY, f"expected a message frame, got {frame!r}"
    return decode(frame.data)


@pytest.mark.parametrize(("frame", "reason"), BAD_FRAMES)
async def test_bad_frame_is_counted_and_the_connection_survives(
    synced: World, raw_b: aiohttp.ClientWebSocketResponse, frame: bytes, reason: str
) -> None:
    rejected = Probe.bad_input("server", reason)
    published = Probe.messages("ingester", "in")

    await raw_b.send_bytes(frame)
    await eventually(lambda: rejected.delta >= 1, what=f"server bad_input {reason}")
    assert rejected.delta == 1
    assert not raw_b.closed

    # The same socket still works: a checksum for an object the backend lacks is answered with
    # a GetObject on this very connection.
    ref = ObjectRef(CONFIGMAPS, "shop", f"probe-{reason}")
    await raw_b.send_bytes(encode(NewChecksum(ref=ref, checksum="c0ffee", depth=1,
                                              msg_id=new_msg_id())))
    reply = await _next_message(raw_b)
    assert isinstance(reply, GetObject)
    assert reply.ref == ref and reply.base_object is None
    assert published.delta == 1, "the rejected frame must not reach the bus"

    # Cluster A's real agent kept syncing meanwhile.
    cluster = synced.clusters[CLUSTER_A]
    name = f"during-{reason.replace('_', '-')}"
    cluster.create(configmap(name))
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", name),
        what="cluster A to keep syncing",
    )
    assert synced.connected(CLUSTER_A) and synced.connected(CLUSTER_B)


async def test_all_bad_frames_in_a_row_on_one_connection(
    synced: World, raw_b: aiohttp.ClientWebSocketResponse
) -> None:
    probes = {reason: Probe.bad_input("server", reason) for _, reason in
              (p.values for p in BAD_FRAMES)}
    for param in BAD_FRAMES:
        await raw_b.send_bytes(param.values[0])
    await eventually(lambda: all(p.delta == 1 for p in probes.values()), what="all four rejections")
    ref = ObjectRef(CONFIGMAPS, "shop", "after-garbage")
    await raw_b.send_bytes(encode(NewChecksum(ref=ref, checksum="x", msg_id=new_msg_id())))
    reply = await _next_message(raw_b)
    assert isinstance(reply, GetObject) and reply.ref == ref


async def test_a_bad_object_in_a_batch_is_refused_alone(
    synced: World, raw_b: aiohttp.ClientWebSocketResponse
) -> None:
    """The server forwards objects unparsed; the ingester refuses the bad one with a metric and
    stores the rest of the batch."""
    refused = Probe.bad_input("ingester", "bad_object")
    server_rejects = Probe.bad_input("server", "malformed")
    names = ["batch-before", "batch-bad", "batch-after"]
    bodies = [orjson.dumps(configmap(names[0])), b'{"metadata": {"name": ',
              orjson.dumps(configmap(names[2]))]
    items = [
        {"Kind": _wire_kind("configmaps"), "Name": name, "Namespace": "shop",
         "Checksum": "c0ffee", "Object": body.decode(), "Depth": 1, "MsgId": new_msg_id()}
        for name, body in zip(names, bodies, strict=True)
    ]
    await raw_b.send_bytes(orjson.dumps({
        "Event": 8, "Depth": 1, "MsgId": new_msg_id(), "Kind": _wire_kind("configmaps"),
        "Items": {"PutObject": items},
    }))

    async def good_ones_stored() -> bool:
        rows = await synced.store.list(ACCOUNT, CLUSTER_B)
        return {r.key.ref.name for r in rows} == {names[0], names[2]}

    await eventually(good_ones_stored, what="the good objects of the batch stored")
    await eventually(lambda: refused.delta >= 1, what="ingester bad_input bad_object")
    assert refused.delta == 1
    assert server_rejects.delta == 0
    assert not raw_b.closed


async def test_unknown_kind_from_the_backend_is_refused_by_the_agent(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    refused = Probe.bad_input("agent", "unknown_kind")
    ref = ObjectRef(STATEFULSETS, "shop", "db")
    body = orjson.dumps({"apiVersion": "apps/v1", "kind": "StatefulSet",
                         "metadata": {"name": "db", "namespace": "shop"}, "spec": {"replicas": 1}})
    msg = PutObject(ref=ref, checksum="", object=body, depth=1, msg_id=new_msg_id())

    await synced.bus.publish(
        down_subject(ACCOUNT, CLUSTER_A), encode_envelope(Envelope(ACCOUNT, CLUSTER_A, msg))
    )

    await eventually(lambda: refused.delta >= 1, what="agent bad_input unknown_kind")
    assert refused.delta == 1
    assert cluster.sandbox.get("apps", "v1", "statefulsets", "shop", "db") is None
    cluster.create(configmap("still-working"))
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "still-working"),
        what="a later change to sync",
    )
    assert cluster.task is not None and not cluster.task.done()


async def test_undecodable_bus_message_is_parked_and_skipped(synced: World) -> None:
    parked = Probe.sample("clustersync_dead_letters_total", reason="malformed")
    counted = Probe.bad_input("ingester", "malformed")
    ref = ObjectRef(CONFIGMAPS, "shop", "behind-garbage")
    obj = configmap("behind-garbage")
    follower = PutObject(ref=ref, checksum="feed", object=orjson.dumps(obj), depth=1,
                         msg_id=new_msg_id())

    # cs.up.x.y.<partition>: the garbage sits on the very subject (so in the very queue) the
    # follower uses, ahead of it.
    subject = up_subject("x", "y", partition_of(follower))
    assert subject.startswith("cs.up.x.y")
    await synced.bus.publish(subject, b"\x00definitely not an envelope")
    await synced.bus.publish(subject, encode_envelope(Envelope("x", "y", follower)))

    letters = await eventually(synced.store.dead_letters, what="a dead letter")
    assert len(letters) == 1
    assert letters[0].subject == subject
    assert letters[0].data == b"\x00definitely not an envelope"
    assert parked.delta == 1
    assert counted.delta == 1

    async def follower_stored() -> bool:
        rows = await synced.store.list("x", "y")
        return [r.key.ref for r in rows] == [ref] and rows[0].checksum == "feed"

    await eventually(follower_stored, what="the message behind the garbage to be ingested")
    assert len(await synced.store.dead_letters()) == 1
    # The real cluster is unaffected.
    synced.clusters[CLUSTER_A].create(configmap("unaffected"))
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "unaffected"),
        what="cluster A to keep syncing",
    )


async def test_undeliverable_message_for_an_agent_is_parked_by_the_ingester(
    synced: World,
) -> None:
    """A server cannot park (it has no store): it forwards to cs.dead, the ingester parks."""
    counted = Probe.bad_input("server", "malformed")
    subject = down_subject(ACCOUNT, CLUSTER_A)
    await synced.bus.publish(subject, b"{not json")

    letters = await eventually(synced.store.dead_letters, what="the forwarded dead letter")
    assert [(d.subject, d.data) for d in letters] == [(subject, b"{not json")]
    assert letters[0].reason.startswith("undeliverable")
    assert counted.delta == 1
    # The agent's connection and the messages behind it are unaffected.
    synced.clusters[CLUSTER_A].create(configmap("after-garbage"))
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "after-garbage"),
        what="cluster A to keep syncing",
    )


@pytest.mark.parametrize(
    ("method", "kwargs", "token", "status"),
    [
        ("POST", {"json": {"account": ACCOUNT, "cluster": CLUSTER_A,
                           "object": configmap("x")}}, "nobody-knows-me", 401),
        ("POST", {"json": {"account": ACCOUNT, "cluster": CLUSTER_A,
                           "object": configmap("x")}}, TOKENS[CLUSTER_A], 403),
        ("POST", {"data": b"{not json"}, None, 400),
        ("POST", {"json": {"account": ACCOUNT, "object": configmap("x")}}, None, 400),
        ("POST", {"json": {"account": ACCOUNT, "cluster": CLUSTER_A,
                           "object": {"apiVersion": "v1", "kind": "ConfigMap"}}}, None, 400),
        ("POST", {"json": {"account": ACCOUNT, "cluster": CLUSTER_A, "kind": "Not/Valid!/x",
                           "object": configmap("x")}}, None, 422),  # as an unknown kind
        ("DELETE", {"params": {"account": ACCOUNT, "cluster": CLUSTER_A, "name": "x"}}, None, 400),
    ],
    ids=["unknown-token", "agent-token", "not-json", "no-cluster", "no-name", "bad-kind",
         "delete-without-kind"],
)
async def test_api_refuses_bad_requests_without_touching_the_bus(
    synced: World, method: str, kwargs: dict, token: str | None, status: int
) -> None:
    counted = Probe.bad_input("api", str(status))
    retained = synced.bus.retained
    await synced.api(method, "/api/v1/objects", expect=status,
                     **({"token": token} if token else {}), **kwargs)
    assert counted.delta == 1
    assert synced.bus.retained == retained
    assert synced.clusters[CLUSTER_A].get(CONFIGMAPS, "shop", "x") is None
    assert await synced.row(CLUSTER_A, CONFIGMAPS, "shop", "x") is None
