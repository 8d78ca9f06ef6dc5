"""Honest backend write outcomes, end to end with real parts: a backend (embedded bus, SQLite or
PostgreSQL), sandbox clusters and agents over loopback sockets.

Every accepted write gets an id and an outcome readable at ``/api/v1/writes/{id}``; the API
refuses what it can know is wrong (unknown cluster 404, unsynced kind or wrong scope 422) as
``application/problem+json``; and the store never keeps what the cluster refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.store.postgres import open_postgres
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent_types import Strategy, WritePolicy
from clustersync.runtime.backend import Backend
from clustersync.runtime.config import ResourceSpec

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import (
        ACCOUNT,
        ADMIN_TOKEN,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        NAMESPACES,
        TOKENS,
        Probe,
        World,
        configmap,
        eventually,
    )
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        ADMIN_TOKEN,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        NAMESPACES,
        TOKENS,
        Probe,
        World,
        configmap,
        eventually,
    )

SECRETS_PATH = "/v1/secrets"
PROBLEM = "application/problem+json"


class PostgresWorld(World):
    """The harness's world with the PostgreSQL store instead of SQLite."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        super().__init__(tmp_path)
        self.url = url

    async def start(self) -> None:
        await super().start()
        # Swap the SQLite store for PostgreSQL before anything has been written.
        await self.backend.stop()
        await self.store.close()
        self.store = await open_postgres(self.url)  # type: ignore[assignment]
        self.backend = Backend(self.bus, self.store, self.backend.tokens, heartbeat=self.heartbeat)
        await self.backend.start()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """'' for SQLite; for PostgreSQL, a fresh database of the session's server."""
    return "" if request.param == "sqlite" else str(request.getfixturevalue("pg_database_url"))


@pytest.fixture
async def world(store_url: str, tmp_path: Path) -> AsyncIterator[World]:
    w = PostgresWorld(tmp_path, store_url) if store_url else World(tmp_path)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def synced(world: World) -> World:
    await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    await described(world, CLUSTER_A)
    return world


async def described(world: World, cluster: str) -> None:
    """Wait until the backend has recorded which kinds the cluster's agent syncs."""

    async def info() -> Any:
        return await world.store.cluster_info(ACCOUNT, cluster)

    await eventually(info, what=f"the agent of {cluster} to say which kinds it syncs")


async def request(
    world: World, method: str, path: str, token: str = ADMIN_TOKEN, **kwargs: Any
) -> tuple[int, str, Any]:
    """(status, content type, parsed body) of an API call, by default with the admin token."""
    headers = {"Authorization": f"Bearer {token}"}
    async with world.http.request(
        method, f"{world.backend.url}{path}", headers=headers, **kwargs
    ) as response:
        body = await response.read()
        return response.status, response.content_type, orjson.loads(body) if body else None


async def push(world: World, cluster: str, obj: dict[str, Any]) -> tuple[int, str, Any]:
    return await request(
        world,
        "POST",
        "/api/v1/objects",
        json={"account": ACCOUNT, "cluster": cluster, "object": obj},
    )


async def delete(
    world: World, cluster: str, kind: str, namespace: str, name: str
) -> tuple[int, str, Any]:
    params = {"account": ACCOUNT, "cluster": cluster, "kind": kind, "name": name}
    if namespace:
        params["namespace"] = namespace
    return await request(world, "DELETE", "/api/v1/objects", params=params)


async def outcome(world: World, accepted: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The write's outcome once it is no longer pending."""

    async def settled() -> Any:
        status, _, doc = await request(world, "GET", f"/api/v1/writes/{accepted['id']}")
        assert status == 200, doc
        return doc if doc["status"] != "pending" else None

    result: dict[str, Any] = await eventually(settled, timeout, "the write's outcome")
    return result


def assert_problem(result: tuple[int, str, Any], status: int, *needles: str) -> None:
    code, content_type, doc = result
    assert (code, content_type) == (status, PROBLEM), result
    assert doc["status"] == status
    assert doc["title"] and doc["type"] == "about:blank"
    for needle in needles:
        assert needle in doc["detail"], doc


# ---------------------------------------------------------------- outcomes from the cluster


async def test_a_push_is_applied_and_its_outcome_readable(synced: World) -> None:
    status, _, accepted = await push(synced, CLUSTER_A, configmap("pushed", data="1"))
    assert status == 202, accepted
    assert accepted["status"] == "pending"
    assert accepted["location"] == f"/api/v1/writes/{accepted['id']}"
    done = await outcome(synced, accepted)
    assert done["status"] == "applied"
    assert (done["kind"], done["namespace"], done["name"]) == ("/v1/configmaps", "shop", "pushed")
    assert (done["account"], done["cluster"], done["verb"]) == (ACCOUNT, CLUSTER_A, "put")
    live = synced.clusters[CLUSTER_A].get(CONFIGMAPS, "shop", "pushed")
    assert live is not None and live["data"] == {"data": "1"}
    await synced.wait_synced(CLUSTER_A)


async def test_location_header_names_the_write(synced: World) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"account": ACCOUNT, "cluster": CLUSTER_A, "object": configmap("located")}
    async with synced.http.post(
        f"{synced.backend.url}/api/v1/objects", json=body, headers=headers
    ) as response:
        assert response.status == 202
        doc = await response.json()
        assert response.headers["Location"] == f"/api/v1/writes/{doc['id']}"


async def test_a_push_into_a_missing_namespace_is_refused_and_not_kept(synced: World) -> None:
    status, _, accepted = await push(synced, CLUSTER_A, configmap("lost", "nowhere"))
    assert status == 202, accepted
    done = await outcome(synced, accepted)
    assert done["status"] == "refused"
    assert 'namespaces "nowhere" not found' in done["reason"]

    # The backend stored the write before sending it; the agent's report of what the cluster
    # holds removes it long before any resync (600 s away).
    async def gone() -> bool:
        return await synced.row(CLUSTER_A, CONFIGMAPS, "nowhere", "lost") is None

    await eventually(gone, what="the refused object to leave the store")
    await synced.wait_synced(CLUSTER_A)


async def test_a_write_meeting_a_transient_api_server_error_is_applied(synced: World) -> None:
    synced.clusters[CLUSTER_A].sandbox.fail_requests(500, 1)  # the agent's first try fails
    status, _, accepted = await push(synced, CLUSTER_A, configmap("after-a-500"))
    assert status == 202, accepted
    assert (await outcome(synced, accepted))["status"] == "applied"
    assert synced.clusters[CLUSTER_A].sandbox.failures_left == 0
    assert synced.clusters[CLUSTER_A].get(CONFIGMAPS, "shop", "after-a-500") is not None


async def test_a_write_that_keeps_failing_is_failed_and_not_kept(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    assert cluster.agent is not None
    cluster.agent.write_retry_delays = (0.05, 0.05)  # give up sooner than in production
    cluster.sandbox.fail_requests(500, 100_000)
    try:
        status, _, accepted = await push(synced, CLUSTER_A, configmap("doomed"))
        assert status == 202, accepted
        done = await outcome(synced, accepted)
    finally:
        cluster.sandbox.fail_requests(500, 0)
    assert done["status"] == "failed"
    assert "HTTP 500" in done["reason"]

    async def gone() -> bool:
        return await synced.row(CLUSTER_A, CONFIGMAPS, "shop", "doomed") is None

    await eventually(gone, what="the failed write to leave the store")
    assert cluster.get(CONFIGMAPS, "shop", "doomed") is None


async def test_a_delete_of_an_absent_object_is_not_found(synced: World) -> None:
    status, _, accepted = await delete(synced, CLUSTER_A, "/v1/configmaps", "shop", "never-was")
    assert status == 202, accepted
    done = await outcome(synced, accepted)
    assert (done["status"], done["verb"]) == ("not_found", "delete")
    assert "does not exist" in done["reason"]


async def test_a_delete_is_applied(synced: World) -> None:
    status, _, accepted = await delete(synced, CLUSTER_A, "/v1/configmaps", "shop", "flags")
    assert status == 202, accepted
    assert (await outcome(synced, accepted))["status"] == "applied"
    assert synced.clusters[CLUSTER_A].get(CONFIGMAPS, "shop", "flags") is None


async def test_kinds_as_kubectl_users_write_them(synced: World) -> None:
    status, _, accepted = await delete(synced, CLUSTER_A, "cm", "shop", "flags")
    assert status == 202, accepted
    assert accepted["id"]
    assert (await outcome(synced, accepted))["status"] == "applied"
    assert synced.clusters[CLUSTER_A].get(CONFIGMAPS, "shop", "flags") is None
    unknown = await delete(synced, CLUSTER_A, "configmapz", "shop", "flags")
    assert_problem(unknown, 422, "unknown kind 'configmapz'", "did you mean", "'configmaps'")
    pushed = configmap("by-short-name", "shop")
    status, _, accepted = await request(synced, "POST", "/api/v1/objects", json={
        "account": ACCOUNT, "cluster": CLUSTER_A, "kind": "ConfigMap", "object": pushed})
    assert status == 202, accepted
    assert (await outcome(synced, accepted))["status"] == "applied"
    assert synced.clusters[CLUSTER_A].get(CONFIGMAPS, "shop", "by-short-name") is not None


async def test_a_policy_refusal_restores_the_clusters_copy_in_the_store(world: World) -> None:
    await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A, write_policy=WritePolicy(namespaces=frozenset({"shop"})))
    await world.wait_synced(CLUSTER_A)
    changed = configmap("operator-config", "kubescape", mode="off")
    status, _, accepted = await push(world, CLUSTER_A, changed)
    assert status == 202, accepted
    done = await outcome(world, accepted)
    assert done["status"] == "refused"
    assert done["reason"] == "write policy: namespace kubescape is not writable"
    live = world.clusters[CLUSTER_A].get(CONFIGMAPS, "kubescape", "operator-config")
    assert live is not None and live["data"] == {"mode": "full"}

    async def restored() -> bool:
        row = await world.row(CLUSTER_A, CONFIGMAPS, "kubescape", "operator-config")
        return row is not None and orjson.loads(row.object)["data"] == {"mode": "full"}

    await eventually(restored, what="the store to hold the cluster's copy again")


async def test_unknown_write_id(synced: World) -> None:
    assert_problem(await request(synced, "GET", "/api/v1/writes/no-such-write"), 404, "no-such")


# ---------------------------------------------------------------- what the API refuses at once


async def test_a_misspelled_cluster_is_404(synced: World) -> None:
    result = await push(synced, "cluster-aa", configmap("typo"))
    assert_problem(result, 404, "unknown cluster 'cluster-aa'")
    result = await delete(synced, "cluster-aa", "/v1/configmaps", "shop", "settings")
    assert_problem(result, 404, "cluster-aa")
    # No fake cluster appears in the store.
    assert await synced.store.list(ACCOUNT, "cluster-aa") == []


async def test_a_kind_the_agent_does_not_sync_is_422(world: World) -> None:
    await world.add_cluster(CLUSTER_B)
    world.start_agent(CLUSTER_B, resources=(ResourceSpec(CONFIGMAPS, Strategy.COPY),))
    await described(world, CLUSTER_B)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "stringData": {"password": "hunter2"},
    }
    result = await push(world, CLUSTER_B, secret)
    assert_problem(result, 422, f"does not sync {SECRETS_PATH}", "it syncs /v1/configmaps")
    assert await world.store.list(ACCOUNT, CLUSTER_B, Kind.parse(SECRETS_PATH)) == []
    # A kind it does sync is accepted.
    status, _, accepted = await push(world, CLUSTER_B, configmap("fine"))
    assert status == 202, accepted
    assert (await outcome(world, accepted))["status"] == "applied"


async def test_an_unsynced_kind_accepted_before_the_agent_spoke_is_not_kept(world: World) -> None:
    """Before the agent has said what it syncs, the API cannot refuse the Secret; the agent
    does, and has the stored copy dropped (nothing would ever resync it)."""
    await world.add_cluster(CLUSTER_B)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "early", "namespace": "shop"},
        "stringData": {"password": "hunter2"},
    }
    status, _, accepted = await push(world, CLUSTER_B, secret)
    assert status == 202, accepted
    secrets = Kind.parse(SECRETS_PATH)

    async def stored() -> bool:
        return await world.row(CLUSTER_B, secrets, "shop", "early") is not None

    await eventually(stored, what="the backend to store its write")  # as it does every write
    world.start_agent(CLUSTER_B, resources=(ResourceSpec(CONFIGMAPS, Strategy.COPY),))
    done = await outcome(world, accepted)
    assert (done["status"], done["reason"]) == ("refused", f"{SECRETS_PATH} is not synced here")

    async def dropped() -> bool:
        return await world.row(CLUSTER_B, secrets, "shop", "early") is None

    await eventually(dropped, what="the refused Secret to leave the store")


async def test_a_namespaced_kind_without_a_namespace_is_422(synced: World) -> None:
    bare = configmap("no-namespace")
    del bare["metadata"]["namespace"]
    assert_problem(await push(synced, CLUSTER_A, bare), 422, "namespaced")
    result = await delete(synced, CLUSTER_A, "/v1/configmaps", "", "settings")
    assert_problem(result, 422, "/v1/configmaps is namespaced")
    wrong = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "namespace": "y"}}
    assert_problem(await push(synced, CLUSTER_A, wrong), 422, "cluster-scoped")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}}
    status, _, accepted = await push(synced, CLUSTER_A, namespace)
    assert status == 202, accepted
    assert (await outcome(synced, accepted))["status"] == "applied"
    assert synced.clusters[CLUSTER_A].get(NAMESPACES, "", "fresh") is not None


async def test_bad_requests_are_problem_documents(synced: World) -> None:
    assert_problem(await request(synced, "POST", "/api/v1/objects", data=b"{nope"), 400, "not JSON")
    assert_problem(await request(synced, "GET", "/api/v1/writes/x", token="wrong"), 401, "token")
    agent_token = TOKENS[CLUSTER_A]
    assert_problem(await request(synced, "GET", "/api/v1/writes/x", token=agent_token), 403)


# ---------------------------------------------------------------- kubescape agents, restarts


async def test_a_kubescape_agent_gets_sent(world: World) -> None:
    world.backend.server.extensions = False  # the server then speaks kubescape's protocol only
    await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    status, _, accepted = await push(world, CLUSTER_A, configmap("to-kubescape"))
    assert status == 202, accepted
    done = await outcome(world, accepted)
    assert done["status"] == "sent"  # delivered; a kubescape agent cannot say more
    info = await world.store.cluster_info(ACCOUNT, CLUSTER_A)
    assert info is not None and info.protocol == "kubescape"


async def test_pending_writes_survive_a_backend_restart(world: World) -> None:
    """The embedded bus loses what it holds when the backend stops; the writes table does not,
    and pending writes are published again at start."""
    await world.add_cluster(CLUSTER_A)
    status, _, accepted = await push(world, CLUSTER_A, configmap("queued"))  # no agent yet
    assert status == 202, accepted
    await world.backend.stop()
    await world.bus.close()
    world.bus = MemoryBus(redelivery_delay=0.05)  # a new process: nothing queued
    world.backend = Backend(world.bus, world.store, world.backend.tokens)
    await world.backend.start()
    world.start_agent(CLUSTER_A)
    assert (await outcome(world, accepted))["status"] == "applied"
    assert world.clusters[CLUSTER_A].get(CONFIGMAPS, "shop", "queued") is not None


async def test_a_write_published_on_the_bus_directly_gets_an_outcome(synced: World) -> None:
    """Another service (or the API while the database was away) publishes without a record:
    the ingester records the write before forwarding it, so its outcome is still kept."""
    from clustersync.protocol.envelope import Envelope, encode_envelope, write_subject
    from clustersync.protocol.messages import PutObject

    ref = ObjectRef(CONFIGMAPS, "shop", "from-the-bus")
    msg = PutObject(
        ref=ref, checksum="", object=orjson.dumps(configmap("from-the-bus")), msg_id="bus-write-1"
    )
    env = Envelope(ACCOUNT, CLUSTER_A, msg)
    await synced.bus.publish(write_subject(ACCOUNT, CLUSTER_A), encode_envelope(env))
    done = await outcome(synced, {"id": "bus-write-1"})
    assert (done["status"], done["name"]) == ("applied", "from-the-bus")


async def test_only_the_target_cluster_may_report_a_writes_outcome(world: World) -> None:
    from clustersync.protocol.envelope import Envelope, encode_envelope, report_subject
    from clustersync.protocol.messages import WriteOutcome, WriteStatus

    await world.add_cluster(CLUSTER_A)  # no agent: the write stays pending
    status, _, accepted = await push(world, CLUSTER_A, configmap("for-a"))
    assert status == 202, accepted
    foreign = Probe.bad_input("ingester", "foreign_outcome")
    ref = ObjectRef(CONFIGMAPS, "shop", "for-a")
    claim = WriteOutcome(ref=ref, status=WriteStatus.APPLIED, msg_id=accepted["id"])
    # As the server would bridge it from cluster B's connection.
    env = Envelope(ACCOUNT, CLUSTER_B, report=claim)
    await world.bus.publish(report_subject(ACCOUNT, CLUSTER_B), encode_envelope(env))
    await eventually(lambda: foreign.delta == 1, what="the foreign outcome to be refused")
    _, _, doc = await request(world, "GET", f"/api/v1/writes/{accepted['id']}")
    assert doc["status"] == "pending"


async def test_an_account_wide_token_names_the_clusters_that_connected(tmp_path: Path) -> None:
    """With a token for a whole account (no cluster), a cluster is known once its agent has
    described itself; before that, and in other accounts, it is 404."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from clustersync.adapters.store import ClusterInfo
    from clustersync.adapters.store.sqlite import open_sqlite
    from clustersync.model.identity import Identity, TokenTable
    from clustersync.runtime.api import BackendApi

    store = await open_sqlite(f"sqlite:///{tmp_path}/api.db")
    bus = MemoryBus()
    tokens = TokenTable({"account-wide-token": Identity("acme"), ADMIN_TOKEN: Identity(admin=True)})
    app = web.Application()
    BackendApi(store, bus, tokens).add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:

        async def push_to(account: str, cluster: str) -> int:
            body = {"account": account, "cluster": cluster, "object": configmap("x")}
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with client.post("/api/v1/objects", json=body, headers=headers) as response:
                return response.status

        assert await push_to("acme", "edge-1") == 404  # not connected yet
        await store.save_cluster_info(ClusterInfo("acme", "edge-1", "kubescape"))
        assert await push_to("acme", "edge-1") == 202
        await store.save_cluster_info(ClusterInfo("other", "edge-1", "kubescape"))
        assert await push_to("other", "edge-1") == 404  # no token of that account
    finally:
        await client.close()
        await bus.close()
        await store.close()
