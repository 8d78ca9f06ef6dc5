"""Our server on a Pulsar bus in kubescape's layout, with a kubescape agent on its socket (the
Pulsar broker is the in-memory stand-in: none can run here): its connect produces ServerConnected
and a ConnectedClients report carrying what the agent said of itself, and every recorded message
a Go backend puts on the topic reaches the agent as the frames a Go server sends for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from clustersync.adapters.bus.pulsar import PulsarBus
from clustersync.adapters.bus.pulsar_layout import KubescapeLayout
from clustersync.model import Kind, ObjectRef
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol import codec
from clustersync.protocol.messages import (
    GetObject,
    Message,
    NewChecksum,
    ObjectDeleted,
    PatchObject,
    PutObject,
)
from clustersync.runtime.server import SyncServer, connect_info
from clustersync.runtime.services import server_site

try:
    from tests.contracts import load_contract
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from contracts import load_contract  # type: ignore[no-redef]

_standin = load_contract(
    "pulsar_standin", Path(__file__).parents[1] / "adapters" / "bus" / "pulsar_standin.py"
)
GOLDEN = Path(__file__).parents[1] / "golden" / "pulsar_messages.json"
TOPIC = "persistent://armo/kubescape/synchronizer"
# The identity the recorded messages are addressed to.
ACCOUNT, CLUSTER, TOKEN = "a1b2c3d4-0000-4000-8000-acc000000001", "prod-eu-1", "agent-token-1"
HEADERS = {
    "X-API-KEY": TOKEN,
    "X-API-ACCOUNT": ACCOUNT,
    "X-API-CLUSTER": CLUSTER,
    "X-HELM-VERSION": "1.29.7",
    "X-SYNCHRONIZER-VERSION": "v0.0.103",
    "X-GIT-VERSION": "v1.31.4-eks-2d98532",
    "X-CLOUD-PROVIDER": "aws",
}


@pytest.fixture
async def served() -> AsyncIterator[tuple[Any, str]]:
    broker = _standin.FakeBroker()
    bus = PulsarBus(_standin.FakeClient(broker), layout=KubescapeLayout(TOPIC))
    await bus.start()
    server = SyncServer(bus, TokenTable({TOKEN: Identity(ACCOUNT, CLUSTER)}), reconcile_interval=0)
    site = server_site(server)
    url = await site.start("127.0.0.1", 0)
    try:
        yield broker, "ws" + url.removeprefix("http") + "/"
    finally:
        await site.stop()
        await bus.close()


def reports(broker: Any, event: str) -> list[Any]:
    return [e for e in broker.entries(TOPIC) if e.properties.get("event") == event]


async def test_connect_reports_the_agents_versions(served: tuple[Any, str]) -> None:
    broker, url = served
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=HEADERS):
        async with asyncio.timeout(10):
            while not reports(broker, "ConnectedClients"):
                await asyncio.sleep(0.01)
    (connected,) = reports(broker, "ServerConnected")
    (clients,) = reports(broker, "ConnectedClients")
    assert connected.key == clients.key == "SynchronizerServerProducer"
    report = orjson.loads(clients.data)
    (client,) = report["clients"]
    assert client | {"connectionId": "", "connectionTime": ""} == {
        "cluster": CLUSTER,
        "account": ACCOUNT,
        "synchronizerVersion": "v0.0.103",
        "helmVersion": "1.29.7",
        "connectionId": "",
        "connectionTime": "",
        "gitVersion": "v1.31.4-eks-2d98532",
        "cloudProvider": "aws",
    }
    assert client["connectionId"] and client["connectionTime"].endswith("Z")
    # The ServerConnected payload is Go's, with nothing of the report in it.
    assert set(orjson.loads(connected.data)) == {"cluster", "account", "depth", "msgId"}


def test_connect_info_bounds_what_it_copies_and_names_the_connection() -> None:
    info = dict(connect_info({"X-HELM-VERSION": "x" * 1000}))
    assert len(info["helmVersion"]) == 256  # a header is no place for a novel
    assert info["synchronizerVersion"] == info["gitVersion"] == info["cloudProvider"] == ""
    again = dict(connect_info({}))
    assert info["connectionId"] != again["connectionId"]


def go_view(frame: dict[str, Any]) -> tuple[Any, ...]:
    """A frame as Go's decoder reads it: keys case-insensitive, missing keys zero; a batch's
    items by name, namespace, resourceVersion and checksum (the receiver takes kind, depth and
    msgId from the batch)."""
    fields = {key.lower(): value for key, value in frame.items()}
    kind = {key.lower(): value for key, value in (fields.get("kind") or {}).items()}
    items = {key.lower(): value for key, value in (fields.get("items") or {}).items()}
    listed = tuple(
        (name, tuple(sorted(
            (i.get("Name", ""), i.get("Namespace", ""), i.get("ResourceVersion", 0),
             i.get("Checksum", ""))
            for i in items.get(name) or []
        )))
        for name in ("newchecksum", "objectdeleted", "getobject", "patchobject", "putobject")
    )
    scalars = tuple(
        fields.get(key) or "" for key in
        ("name", "namespace", "checksum", "patch", "object", "baseobject", "batchtype")
    )
    return (
        fields.get("event", 0), fields.get("depth", 0), fields.get("msgid", ""),
        (kind.get("group", ""), kind.get("version", ""), kind.get("resource", "")),
        fields.get("resourceversion") or 0, scalars, listed,
    )


async def test_a_go_backends_messages_reach_the_agent_as_go_frames(
    served: tuple[Any, str],
) -> None:
    broker, url = served
    cases = [c for c in json.loads(GOLDEN.read_text()) if c["direction"] == "consume"]
    # Refused ones first: a frame they wrongly produced would show among those compared.
    cases.sort(key=lambda case: case["expected"]["outcome"] != "error")
    expected = sorted(
        go_view(json.loads(frame))
        for case in cases if case["expected"]["outcome"] == "handled"
        for frame in case["expected"]["ws_frames"]
    )
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=HEADERS) as ws:
        for case in cases:
            given = case["input"]
            broker.append(TOPIC, "ingester", given["payload"].encode(), given["properties"])
        got = []
        async with asyncio.timeout(10):
            while len(got) < len(expected):
                frame = await ws.receive()
                assert frame.type == aiohttp.WSMsgType.BINARY, frame
                doc = orjson.loads(frame.data)
                if {key.lower() for key in doc} >= {"event"} and doc.get("Event") == 7:
                    continue  # the server's keepalive Ping
                got.append(go_view(doc))
    assert sorted(got) == expected


def agent_frame(given: dict[str, Any]) -> bytes:
    """The websocket message a kubescape agent sends for a recorded produce input."""
    ref = ObjectRef(Kind(**given["kind"]), given["namespace"], given["name"])
    meta: dict[str, Any] = {"depth": given["ctxDepth"], "msg_id": given["msgId"]}
    call = given["call"]
    msg: Message
    if call == "VerifyObject":
        msg = NewChecksum(ref=ref, checksum=given["checksum"],
                          resource_version=given["resourceVersion"], **meta)
    elif call == "DeleteObject":
        msg = ObjectDeleted(ref=ref, resource_version=given["resourceVersion"], **meta)
    elif call == "GetObject":
        msg = GetObject(ref=ref, base_object=given["baseObject"].encode(), **meta)
    elif call == "PatchObject":
        msg = PatchObject(ref=ref, checksum=given["checksum"], patch=given["patch"].encode(),
                          **meta)
    else:
        msg = PutObject(ref=ref, checksum=given["checksum"], object=given["object"].encode(),
                        **meta)
    return codec.encode(msg)


async def test_a_kubescape_agents_messages_reach_the_topic_as_a_go_server_writes_them(
    served: tuple[Any, str],
) -> None:
    broker, url = served
    cases = [
        c for c in json.loads(GOLDEN.read_text())
        if c["direction"] == "produce" and c["input"]["call"] in OBJECT_CALLS
        and (c["input"]["account"], c["input"]["cluster"]) == (ACCOUNT, CLUSTER)
    ]
    assert cases

    def forwarded() -> list[Any]:
        return [e for e in broker.entries(TOPIC) if e.properties.get("event") in OBJECT_CALLS]

    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=HEADERS) as ws:
        for case in cases:
            await ws.send_bytes(agent_frame(case["input"]))
        async with asyncio.timeout(10):
            while len(forwarded()) < len(cases):
                await asyncio.sleep(0.01)
    for case, entry in zip(cases, forwarded(), strict=True):
        want = case["expected"]
        assert entry.key == want["key"]
        assert untimed(entry.properties) == untimed(want["properties"])
        assert entry.data == want["payload"].encode(), case["name"]


OBJECT_CALLS = {"VerifyObject", "DeleteObject", "GetObject", "PatchObject", "PutObject"}


def untimed(properties: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in properties.items() if key != "timestamp"}
