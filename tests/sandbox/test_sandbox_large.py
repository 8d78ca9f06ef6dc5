"""Large lists and watches: bodies bigger than one chunk are streamed, and still whole.

The sandbox stores objects as encoded bytes and writes lists above ``listbody.CHUNK`` with
chunked transfer encoding; a client must still see one valid list with every object as written.
"""

from __future__ import annotations

import orjson
import pytest
from kubernetes_asyncio import client
from sandbox_helpers import call, cm, open_watch, raw

from clustersync.sandbox import Sandbox
from clustersync.sandbox.listbody import CHUNK
from clustersync.sandbox.selectors import Filter

pytestmark = pytest.mark.asyncio

CM = ("", "v1", "configmaps")
CM_PATH = "/api/v1/namespaces/default/configmaps"
COUNT = 300
PAYLOAD = 8 * 1024  # COUNT objects of this size make a body of several chunks


def big_cm(i: int) -> dict[str, object]:
    obj = cm(f"big-{i:03d}", parity="even" if i % 2 == 0 else "odd")
    obj["data"] = {"k": f"{i:03d}" + "v" * PAYLOAD}
    return obj


def expected_data(i: int) -> dict[str, str]:
    return {"k": f"{i:03d}" + "v" * PAYLOAD}


async def test_large_list_is_streamed_and_whole(api: client.ApiClient, sandbox: Sandbox) -> None:
    assert COUNT * PAYLOAD > 2 * CHUNK  # the premise: this list needs several chunks
    for i in range(COUNT):
        sandbox.create(big_cm(i))
    resp = await raw(api, "GET", CM_PATH)
    async with resp:
        body = orjson.loads(await resp.read())
        assert resp.status == 200
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in resp.headers
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert body["metadata"] == {"resourceVersion": str(sandbox.resource_version)}
    assert [o["metadata"]["name"] for o in body["items"]] == [f"big-{i:03d}" for i in range(COUNT)]
    assert all(o["data"] == expected_data(i) for i, o in enumerate(body["items"]))

    # A selector looks inside the stored objects; the selection is still streamed whole.
    _, odd = await call(api, "GET", CM_PATH, query=[("labelSelector", "parity=odd")])
    assert [o["metadata"]["name"] for o in odd["items"]] == [
        f"big-{i:03d}" for i in range(1, COUNT, 2)
    ]


async def test_small_list_keeps_a_plain_body(api: client.ApiClient, sandbox: Sandbox) -> None:
    sandbox.create(cm("small"))
    resp = await raw(api, "GET", CM_PATH)
    async with resp:
        body = orjson.loads(await resp.read())
        assert int(resp.headers["Content-Length"]) == len(orjson.dumps(body))
    assert [o["metadata"]["name"] for o in body["items"]] == ["small"]


async def test_large_initial_watch_then_live(api: client.ApiClient, sandbox: Sandbox) -> None:
    for i in range(COUNT):
        sandbox.create(big_cm(i))
    reader = await open_watch(api, CM_PATH)
    try:
        replayed = await reader.take(COUNT)
        assert {e["type"] for e in replayed} == {"ADDED"}
        assert [e["object"]["data"] for e in replayed] == [expected_data(i) for i in range(COUNT)]
        changed = sandbox.patch(*CM, "default", "big-007", {"data": {"k": "small now"}})
        (live,) = await reader.take(1)
        assert live["type"] == "MODIFIED"
        assert live["object"]["data"] == {"k": "small now"}
        assert live["object"]["metadata"] == changed["metadata"]
    finally:
        reader.close()


async def test_objects_read_are_copies(sandbox: Sandbox) -> None:
    sandbox.create(cm("kept"))
    rt = sandbox.registry.find(*CM)
    assert rt is not None
    read = sandbox.store.get(rt, "default", "kept")
    assert read is not None
    read["data"]["k"] = "changed by a reader"
    listed = sandbox.store.list_objects(rt, Filter("default")).items
    listed[0]["metadata"]["name"] = "renamed by a reader"
    again = sandbox.get(*CM, "default", "kept")
    assert again is not None
    assert again["data"] == {"k": "kept"} and again["metadata"]["name"] == "kept"
