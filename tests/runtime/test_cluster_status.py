"""The fleet status: connection facts reported by the server replica, sync progress reported by
the agent, object counts and dead letters, all through the store, so that any API process
answers the same."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest

from clustersync.runtime.services import api_site

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import (
        ACCOUNT,
        ADMIN_TOKEN,
        CLUSTER_A,
        CLUSTER_B,
        RESOURCES,
        TOKENS,
        World,
        eventually,
    )
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        ADMIN_TOKEN,
        CLUSTER_A,
        CLUSTER_B,
        RESOURCES,
        TOKENS,
        World,
        eventually,
    )

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def status(world: World, cluster: str, base: str | None = None) -> Any:
    url = f"{base or world.backend.url}/api/v1/clusters/{ACCOUNT}/{cluster}"
    async with world.http.get(url, headers=ADMIN) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_synced_cluster_shows_its_link_counts_and_finished_sync(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clustersync.agent")
    cluster = await world.add_cluster(CLUSTER_A)
    agent = world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    doc = await eventually(
        lambda: _when(status(world, CLUSTER_A), lambda d: d["initialSync"] == "done"),
        what="the agent's final progress report",
    )
    assert doc["connected"] is True and doc["namedByToken"] is True
    assert doc["replica"] == world.backend.server.takeovers.replica
    assert doc["agentVersion"] == agent.config.version
    assert doc["protocol"] == "clustersync.v2"  # our agent and server agree on fast digests
    assert doc["connectedSince"] <= doc["lastReport"]
    # Stored objects per kind, counted here from the sandbox (minus kube-system, excluded).
    want = {}
    for spec in RESOURCES:
        kind = spec.kind
        live = cluster.sandbox.list(kind.group, kind.version, kind.resource)
        kept = [o for o in live if o["metadata"].get("namespace") != "kube-system"]
        want[str(kind)] = len(kept)
    assert {k["kind"]: k["objects"] for k in doc["kinds"]} == want
    assert doc["objects"] == sum(want.values())
    for kind in doc["kinds"]:
        assert kind["sync"]["done"] is True, kind
        assert kind["sync"]["acknowledged"] == kind["sync"]["listed"] >= kind["objects"], kind
    done = [r.getMessage() for r in caplog.records if "initial sync done" in r.getMessage()]
    listed = sum(k["sync"]["listed"] for k in doc["kinds"])
    assert len(done) == 1 and done[0].startswith(f"initial sync done: {listed} objects in ")

    other = await status(world, CLUSTER_B)
    assert (other["connected"], other["objects"], other["initialSync"]) == (False, 0, "unknown")

    await world.stop_agent(CLUSTER_A)
    gone = await eventually(
        lambda: _when(status(world, CLUSTER_A), lambda d: not d["connected"]),
        what="the disconnect report",
    )
    assert gone["objects"] == doc["objects"]  # the backend keeps what it held


async def test_another_api_process_sharing_the_store_answers_the_same(synced: World) -> None:
    site = api_site(synced.store, synced.bus, synced.backend.tokens)
    url = await site.start()
    try:
        here = await eventually(
            lambda: _when(status(synced, CLUSTER_A), lambda d: d["initialSync"] == "done"),
            what="the final progress report",
        )
        there = await status(synced, CLUSTER_A, base=url)
        assert there == here
    finally:
        await site.stop()


async def test_a_kubescape_agent_and_a_superseded_connection(world: World) -> None:
    headers = {
        "X-API-KEY": TOKENS[CLUSTER_B],
        "X-API-ACCOUNT": ACCOUNT,
        "X-API-CLUSTER": CLUSTER_B,
        "X-SYNCHRONIZER-VERSION": "v0.0.42",
    }
    first = await world.http.ws_connect(world.backend.ws_url, headers=headers)
    doc = await eventually(
        lambda: _when(status(world, CLUSTER_B), lambda d: d["connected"]),
        what="the connect report",
    )
    assert (doc["protocol"], doc["agentVersion"]) == ("kubescape", "v0.0.42")
    assert doc["initialSync"] == "unknown"  # kubescape agents report no progress
    since = doc["connectedSince"]
    second = await world.http.ws_connect(world.backend.ws_url, headers=headers)
    # The first connection is superseded and closed; its disconnect report must not win.
    await eventually(lambda: first.closed or _drain(first), what="the first socket to close")
    newer = await eventually(
        lambda: _when(status(world, CLUSTER_B), lambda d: d["connectedSince"] != since),
        what="the second connection's report",
    )
    assert newer["connected"] is True
    await second.close()
    await eventually(
        lambda: _when(status(world, CLUSTER_B), lambda d: not d["connected"]),
        what="the second connection's disconnect report",
    )


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> bool:
    msg = await ws.receive(timeout=1)
    return msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def _when(doc_coro: Any, check: Any) -> Any:
    doc = await doc_coro
    return doc if check(doc) else None


async def test_a_stalled_sync_logs_its_progress_until_the_backend_answers(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clustersync.agent")
    await world.backend.ingester.stop()  # nobody answers the agent's inventory requests yet
    cluster = await world.add_cluster(CLUSTER_A)
    agent = world.start_agent(CLUSTER_A)
    agent.progress.log_interval = 0.1  # the product logs every 5 s; the test cannot wait that
    namespaces = len(cluster.sandbox.list("", "v1", "namespaces"))
    want = f"initial sync: /v1/namespaces listed {namespaces} sent 0 acknowledged 0"

    def progress_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(want)]

    await eventually(progress_lines, what="a progress line while the sync waits")
    assert not [r for r in caplog.records if "initial sync done" in r.getMessage()]
    await world.backend.ingester.start()
    doc = await eventually(
        lambda: _when(status(world, CLUSTER_A), lambda d: d["initialSync"] == "done"),
        what="the sync to finish once the backend answers",
    )
    assert {k["kind"]: k["sync"]["listed"] for k in doc["kinds"]}["/v1/namespaces"] == namespaces
    assert any("initial sync done" in r.getMessage() for r in caplog.records)
