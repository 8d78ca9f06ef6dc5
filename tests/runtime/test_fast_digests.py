"""Fast digests between our agent and server (clustersync.v2), end to end: what the backend
stores is checked against the digest's definition computed here (tests/faults/digests.py), never
by the project's own function; servers that must not agree, and the agent moving between them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from tests.faults.digests import FAST_FORM, KUBESCAPE_FORM, expected_fast_digest_of_json

from clustersync.adapters.bus.pulsar import PulsarBus
from clustersync.adapters.bus.pulsar_layout import KubescapeLayout, SplitLayout
from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.model import ObjectRef
from clustersync.model.identity import Identity, TokenTable
from clustersync.runtime.server import SyncServer
from clustersync.runtime.services import server_site

try:
    from tests.contracts import load_contract
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        DEPLOYMENTS,
        TOKENS,
        Probe,
        World,
        eventually,
        pod,
    )
except ImportError:
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        DEPLOYMENTS,
        TOKENS,
        Probe,
        World,
        eventually,
        pod,
    )

    from contracts import load_contract  # type: ignore[no-redef]

V1, V2 = "clustersync.v1", "clustersync.v2"  # the subprotocols, as the docs name them


async def stored_checksums(world: World) -> dict[ObjectRef, tuple[str, bytes]]:
    rows = await world.store.list(ACCOUNT, CLUSTER_A)
    return {row.key.ref: (row.checksum, row.object) for row in rows}


async def all_rows_match(world: World, form: Any) -> bool:
    """Every stored checksum has ``form``; fast ones also equal the digest of the stored object."""
    rows = await stored_checksums(world)
    return bool(rows) and all(
        form.match(checksum)
        and (form is not FAST_FORM or checksum == expected_fast_digest_of_json(body))
        for checksum, body in rows.values()
    )


async def reconnect(world: World) -> str:
    """Close the agent's connection from the server; the subprotocol of the next one."""
    old = world.backend.server.connections[(ACCOUNT, CLUSTER_A)]
    await old.ws.close()
    conn = await eventually(
        lambda: (new := world.backend.server.connections.get((ACCOUNT, CLUSTER_A))) is not old
        and new,
        what="the agent's new connection",
    )
    return str(conn.ws.ws_protocol)


async def test_our_agent_and_server_store_fast_digests(world: World) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    running = pod("runner")
    running["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    cluster.create(running)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    assert world.backend.server.connections[(ACCOUNT, CLUSTER_A)].ws.ws_protocol == V2
    assert await all_rows_match(world, FAST_FORM)


async def test_a_patch_verified_by_its_fast_digest_is_applied(synced: World) -> None:
    patches = Probe.messages("agent", "out", "patch_object")
    asked = Probe.messages("server", "out", "get_object")
    synced.clusters[CLUSTER_A].patch(
        DEPLOYMENTS, "shop", "web", {"metadata": {"labels": {"tier": "fast"}}}
    )
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web"), what="patch synced"
    )
    row = await synced.row(CLUSTER_A, DEPLOYMENTS, "shop", "web")
    assert row is not None and orjson.loads(row.object)["metadata"]["labels"]["tier"] == "fast"
    assert row.checksum == expected_fast_digest_of_json(row.object)
    assert patches.delta >= 1
    assert asked.delta == 0  # verified at once


async def test_a_diverged_copy_fails_verification_and_is_repaired(synced: World) -> None:
    key = ObjectKey(ACCOUNT, CLUSTER_A, ObjectRef(DEPLOYMENTS, "shop", "web"))
    row = await synced.store.get(key)
    assert row is not None
    corrupt = orjson.loads(row.object)
    corrupt["metadata"].setdefault("labels", {})["tampered"] = "yes"  # a field no patch touches
    landed = await synced.store.apply([StoredObject(
        key, row.uid, row.resource_version, row.checksum, orjson.dumps(corrupt), row.seq + 1
    )])
    assert landed == 1
    asked = Probe.messages("server", "out", "get_object")
    synced.clusters[CLUSTER_A].patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 4}})
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web"), what="the repair"
    )
    repaired = await synced.store.get(key)
    assert repaired is not None and orjson.loads(repaired.object)["spec"]["replicas"] == 4
    assert "tampered" not in orjson.loads(repaired.object)["metadata"].get("labels", {})
    assert repaired.checksum == expected_fast_digest_of_json(repaired.object)
    assert asked.delta >= 1  # the patch did not verify against the diverged copy


async def test_the_agent_follows_whatever_the_next_server_agrees_to(synced: World) -> None:
    assert await all_rows_match(synced, FAST_FORM)
    server = synced.backend.server

    server.fast_digests = False  # e.g. an older clustersync server
    assert await reconnect(synced) == V1
    # Unchanged objects too: a cached fast digest in the inventory request would have matched
    # the backend's buckets, and their rows would have kept fast digests.
    await eventually(lambda: all_rows_match(synced, KUBESCAPE_FORM), what="kubescape checksums")
    await synced.wait_synced(CLUSTER_A)
    asked = Probe.messages("server", "out", "get_object")
    synced.clusters[CLUSTER_A].patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 5}})
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web"), what="patch synced"
    )
    row = await synced.row(CLUSTER_A, DEPLOYMENTS, "shop", "web")
    assert row is not None and KUBESCAPE_FORM.match(row.checksum)
    assert asked.delta == 0  # the patch verified by kubescape's hash

    server.fast_digests = True
    assert await reconnect(synced) == V2
    await eventually(lambda: all_rows_match(synced, FAST_FORM), what="fast digests again")
    await synced.wait_synced(CLUSTER_A)


async def test_a_kubescape_style_server_gets_kubescape_checksums(world: World) -> None:
    world.backend.server.extensions = False
    await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    assert world.backend.server.connections[(ACCOUNT, CLUSTER_A)].ws.ws_protocol is None
    assert await all_rows_match(world, KUBESCAPE_FORM)


_standin = load_contract(
    "pulsar_standin", Path(__file__).parents[1] / "adapters" / "bus" / "pulsar_standin.py"
)


@pytest.mark.parametrize(
    ("layout", "option", "selected"),
    [
        (KubescapeLayout(), None, V1),  # Go backends may read the topic: never agreed
        (SplitLayout(), None, V2),
        (SplitLayout(), False, V1),  # --kubescape-checksums
    ],
    ids=["kubescape-layout", "split-layout", "option-off"],
)
async def test_when_the_server_agrees(layout: Any, option: bool | None, selected: str) -> None:
    bus = PulsarBus(_standin.FakeClient(_standin.FakeBroker()), layout=layout)
    await bus.start()
    token = TOKENS[CLUSTER_A]
    server = SyncServer(
        bus, TokenTable({token: Identity(ACCOUNT, CLUSTER_A)}), reconcile_interval=0,
        fast_digests=option,
    )
    site = server_site(server)
    url = "ws" + (await site.start("127.0.0.1", 0)).removeprefix("http") + "/"
    headers = {"X-API-KEY": token, "X-API-ACCOUNT": ACCOUNT, "X-API-CLUSTER": CLUSTER_A}
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(
            url, headers=headers, protocols=(V2, V1)  # as our agent offers them
        ) as ws:
            assert ws.protocol == selected
    finally:
        await site.stop()
        await bus.close()
