"""Account-scoped keys, as kubescape issues them: one key for every cluster of an account, the
cluster named by X-API-CLUSTER. Cluster keys keep working and keep refusing another cluster's
header; no key ever reaches another account, on the agent socket or the admin API."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from clustersync.model import ObjectRef
from clustersync.model.identity import Identity
from clustersync.protocol.codec import decode, encode
from clustersync.protocol.messages import GetObject, NewChecksum, PutObject, new_msg_id

try:
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
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
        CONFIGMAPS,
        TOKENS,
        Probe,
        World,
        configmap,
        eventually,
    )

ACCOUNT_KEY = "acme-account-key-0001"
OTHER_ACCOUNT_KEY = "globex-account-key-01"


@pytest.fixture
def keyed(world: World) -> World:
    # The token table is shared by the server and the API; these join the harness's own keys.
    table = world.backend.server.tokens.tokens
    table[ACCOUNT_KEY] = Identity(ACCOUNT)
    table[OTHER_ACCOUNT_KEY] = Identity("globex")
    return world


def kubescape_headers(key: str, cluster: str | None, account: str | None = ACCOUNT
                      ) -> dict[str, str]:
    headers = {"X-API-KEY": key, "X-SYNCHRONIZER-VERSION": "v0.0.77"}
    if account is not None:
        headers["X-API-ACCOUNT"] = account
    if cluster is not None:
        headers["X-API-CLUSTER"] = cluster
    return headers


async def _refused(world: World, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(world.backend.ws_url + "/synchronizer", headers=headers)
        return info.value.status, info.value.message


async def test_one_account_key_connects_several_clusters_at_once(keyed: World) -> None:
    world = keyed
    async with aiohttp.ClientSession() as http:
        sockets = [
            await http.ws_connect(world.backend.ws_url + "/synchronizer",
                                  headers=kubescape_headers(ACCOUNT_KEY, name))
            for name in ("edge-1", "edge-2", "edge-3")
        ]
        await eventually(
            lambda: {("acme", f"edge-{i}") for i in (1, 2, 3)} <= world.backend.server.connections
            .keys(),
            what="three clusters connected with one key",
        )
        assert not any(ws.closed for ws in sockets), "one key's clusters must not supersede"

        # Each socket speaks for its own cluster: a put lands under (acme, edge-2) only, and the
        # backend's answer to a checksum comes back on the socket that asked.
        body = configmap("from-edge-2")
        ref = ObjectRef(CONFIGMAPS, "shop", "from-edge-2")
        await sockets[1].send_bytes(encode(PutObject(
            ref=ref, checksum="c0ffee", object=orjson.dumps(body), depth=1, msg_id=new_msg_id()
        )))

        async def stored() -> Any:
            return [row.key.cluster for row in await world.store.list(ACCOUNT)
                    if row.key.ref == ref]

        assert await eventually(stored, what="the put stored") == ["edge-2"]
        asked = ObjectRef(CONFIGMAPS, "shop", "only-on-edge-3")
        await sockets[2].send_bytes(encode(NewChecksum(
            ref=asked, checksum="feed", depth=1, msg_id=new_msg_id())))
        async with asyncio.timeout(10):
            reply = decode((await sockets[2].receive()).data)
        assert isinstance(reply, GetObject) and reply.ref == asked
        for ws in sockets:
            await ws.close()


async def test_an_account_key_never_reaches_another_account(keyed: World) -> None:
    world = keyed
    mismatch = Probe.bad_input("server", "identity_mismatch")
    status, _ = await _refused(world, kubescape_headers(ACCOUNT_KEY, "edge-1", account="globex"))
    assert status == 401
    assert mismatch.delta == 1
    # With no account header the key's own account applies, never anything else.
    async with aiohttp.ClientSession() as http, http.ws_connect(
        world.backend.ws_url + "/synchronizer",
        headers=kubescape_headers(OTHER_ACCOUNT_KEY, "edge-1", account=None),
    ):
        await eventually(lambda: ("globex", "edge-1") in world.backend.server.connections,
                         what="globex's edge-1 connected")
        assert ("acme", "edge-1") not in world.backend.server.connections


@pytest.mark.parametrize(
    "cluster", [None, "", "bad\tname", "x" * 257], ids=["absent", "empty", "control", "long"]
)
async def test_an_account_key_needs_a_usable_cluster_header(
    keyed: World, cluster: str | None
) -> None:
    bad = Probe.bad_input("server", "bad_cluster_header")
    headers = kubescape_headers(ACCOUNT_KEY, None)
    if cluster is not None:
        headers["X-API-CLUSTER"] = cluster
    status, _ = await _refused(keyed, headers)
    assert status == 401
    assert bad.delta == 1


async def test_cluster_keys_still_refuse_another_clusters_header(keyed: World) -> None:
    status, _ = await _refused(keyed, kubescape_headers(TOKENS[CLUSTER_A], "cluster-b"))
    assert status == 401


async def test_our_agent_syncs_with_an_account_key(keyed: World) -> None:
    world = keyed
    await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A, access_key=ACCOUNT_KEY)  # the world stops it at teardown
    await world.wait_synced(CLUSTER_A)
    assert world.backend.server.connections[(ACCOUNT, CLUSTER_A)].cluster == CLUSTER_A


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_an_account_key_cannot_use_the_admin_api(keyed: World, method: str) -> None:
    await keyed.api(method, "/api/v1/objects", token=ACCOUNT_KEY, expect=403,
                    params={"account": ACCOUNT, "cluster": "edge-1", "kind": "v1/configmaps",
                            "name": "x"},
                    json={"account": "globex", "cluster": "edge-1",
                          "object": configmap("x")} if method == "POST" else None)
