"""The four kubescape flows end to end: cluster changes reach the store, backend writes reach the
cluster, and both sides agree on checksums afterwards."""

from __future__ import annotations

import orjson
import pytest
from tests.faults.checker import row_differences
from tests.faults.digests import expected_fast_digest_of_json

from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.model import ObjectRef
from clustersync.protocol.shaping import MASK

try:
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        DEPLOYMENTS,
        NAMESPACES,
        PODS,
        PROFILES,
        Probe,
        World,
        application_profile,
        configmap,
        deployment,
        eventually,
        messages,
    )
except ImportError:
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CLUSTER_B,
        CONFIGMAPS,
        DEPLOYMENTS,
        NAMESPACES,
        PODS,
        PROFILES,
        Probe,
        World,
        application_profile,
        configmap,
        deployment,
        eventually,
        messages,
    )


# Object messages as the ingester counts them (a batch as the messages it carries, so the count
# does not depend on whether the agent's sender happened to batch two of them).
OBJECT_EVENTS = ("new_checksum", "object_deleted", "patch_object", "put_object")


def ingested() -> dict[str, float]:
    return {event: messages("ingester", "in", event) for event in OBJECT_EVENTS}


def since(before: dict[str, float]) -> dict[str, float]:
    now = ingested()
    return {event: now[event] - before[event] for event in now if now[event] > before[event]}


# ---------------------------------------------------------------- flow 1: added / modified


@pytest.mark.parametrize(
    ("kind", "obj"),
    [(CONFIGMAPS, configmap("fresh", answer="42")), (PROFILES, application_profile("fresh"))],
    ids=["configmap", "applicationprofile"],
)
async def test_added_object_lands_with_agent_checksum(synced: World, kind, obj) -> None:
    cluster = synced.clusters[CLUSTER_A]
    # Created first, so the agent has handled it before the object we wait for.
    cluster.create(configmap("ignored", "kube-system"))
    live = cluster.create(obj)

    row = await eventually(
        lambda: synced.row(CLUSTER_A, kind, "shop", "fresh"), what="the new object in the store"
    )
    # Our agent and server agree on fast digests (clustersync.v2): the digest of what is stored.
    assert row.checksum == expected_fast_digest_of_json(row.object)
    # The content by the independent rules (tests/faults/checker.py), not the production shape.
    stored = {"uid": row.uid, "resourceVersion": row.resource_version,
              "object": orjson.loads(row.object)}
    assert row_differences(live, stored) == []
    assert row.uid == live["metadata"]["uid"]
    assert await synced.row(CLUSTER_A, CONFIGMAPS, "kube-system", "ignored") is None
    assert await synced.row(CLUSTER_A, CONFIGMAPS, "kube-system", "kube-proxy") is None


async def test_modified_patch_strategy_object_is_sent_as_patch(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    patches = Probe.messages("agent", "out", "patch_object")
    ingested = Probe.messages("ingester", "in", "patch_object")

    cluster.patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 7}})

    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web"),
        what="the store to hold the scaled deployment",
    )
    row = await synced.row(CLUSTER_A, DEPLOYMENTS, "shop", "web")
    assert row is not None and orjson.loads(row.object)["spec"]["replicas"] == 7
    assert patches.delta >= 1
    assert ingested.delta >= 1


async def test_failed_patch_is_repaired_from_the_backends_base(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    key = ObjectKey(ACCOUNT, CLUSTER_A, ObjectRef(DEPLOYMENTS, "shop", "web"))
    row = await synced.store.get(key)
    assert row is not None
    corrupt = orjson.loads(row.object)
    corrupt["metadata"].setdefault("labels", {})["tampered"] = "yes"
    corrupt["spec"]["replicas"] = 99
    # The stored copy diverges from the agent's shadow. Its seq must beat the row's but stay
    # below every later bus message: the store's stale-write guard would otherwise (rightly)
    # refuse the repair forever (with seq=10**12 nothing could ever overwrite this row).
    landed = await synced.store.apply([StoredObject(
        key, row.uid, row.resource_version, "corrupt-checksum", orjson.dumps(corrupt), row.seq + 1
    )])
    assert landed == 1

    patches = Probe.messages("agent", "out", "patch_object")
    server_gets = Probe.messages("server", "out", "get_object")
    agent_gets = Probe.messages("agent", "in", "get_object")

    cluster.patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 3}})

    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web"),
        what="the store to be repaired to the cluster's deployment",
    )
    repaired = await synced.store.get(key)
    assert repaired is not None
    assert "tampered" not in (orjson.loads(repaired.object)["metadata"].get("labels") or {})
    assert orjson.loads(repaired.object)["spec"]["replicas"] == 3
    assert server_gets.delta >= 1, "backend never asked for a new patch"
    assert agent_gets.delta >= 1
    assert patches.delta >= 2, "the second patch (against the backend's base) was not sent"


@pytest.mark.parametrize(
    ("kind", "name", "patch", "sent_as"),
    [
        (CONFIGMAPS, "settings", {"data": {"currency": "USD"}}, "put_object"),
        (PODS, "toolbox", {"metadata": {"labels": {"tier": "debug"}}}, "patch_object"),
    ],
    ids=["copy-configmap", "patch-pod"],
)
async def test_modification_skips_the_checksum_round_trip(
    synced: World, kind, name, patch, sent_as
) -> None:
    cluster = synced.clusters[CLUSTER_A]
    checksums = Probe.messages("agent", "out", "new_checksum")
    changes = Probe.messages("agent", "out", sent_as)
    server_gets = Probe.messages("server", "out", "get_object")

    cluster.patch(kind, "shop", name, patch)

    await eventually(
        lambda: synced.matches_live(CLUSTER_A, kind, "shop", name), what=f"store to follow {name}"
    )
    await synced.quiesce(CLUSTER_A)
    assert checksums.delta == 0
    assert changes.delta >= 1
    assert server_gets.delta == 0


@pytest.mark.parametrize("coalesced", [True, False], ids=["coalesced", "separate"])
async def test_recreated_object_replaces_the_old_uid(synced: World, coalesced: bool) -> None:
    cluster = synced.clusters[CLUSTER_A]
    old = await synced.row(CLUSTER_A, CONFIGMAPS, "shop", "flags")
    assert old is not None

    cluster.delete(CONFIGMAPS, "shop", "flags")
    if not coalesced:
        await eventually(
            lambda: _absent(synced, CONFIGMAPS, "shop", "flags"), what="deletion in the store"
        )
    recreated = cluster.create(configmap("flags", beta="off"))
    assert recreated["metadata"]["uid"] != old.uid

    async def has_new_uid() -> bool:
        row = await synced.row(CLUSTER_A, CONFIGMAPS, "shop", "flags")
        return row is not None and row.uid == recreated["metadata"]["uid"]

    await eventually(has_new_uid, what="the recreated configmap's uid in the store")
    assert await synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "flags")


# ---------------------------------------------------------------- flow 2: deleted in the cluster


async def _absent(world: World, kind, namespace: str, name: str, cluster: str = CLUSTER_A) -> bool:
    return await world.row(cluster, kind, namespace, name) is None


@pytest.mark.parametrize(
    ("kind", "namespace", "name"),
    [
        (CONFIGMAPS, "shop", "settings"),
        (DEPLOYMENTS, "shop", "api"),
        (PROFILES, "shop", "web-profile"),
    ],
    ids=["configmap", "deployment", "applicationprofile"],
)
async def test_deleted_in_cluster_leaves_the_store(synced: World, kind, namespace, name) -> None:
    assert await synced.row(CLUSTER_A, kind, namespace, name) is not None
    synced.clusters[CLUSTER_A].delete(kind, namespace, name)
    await eventually(lambda: _absent(synced, kind, namespace, name), what=f"{name} gone")
    assert await synced.in_sync(CLUSTER_A)


# ---------------------------------------------------------------- flow 3 and 4: backend writes


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        (CONFIGMAPS, configmap("from-backend", command="scan")),
        (PROFILES, application_profile("from-backend")),
        (NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "from-backend", "labels": {"team": "x"}}}),
    ],
    ids=["copy-configmap", "patch-applicationprofile", "patch-cluster-scoped-namespace"],
)
async def test_backend_write_reaches_the_cluster_without_echo(synced: World, kind, obj) -> None:
    cluster = synced.clusters[CLUSTER_A]
    namespace = obj["metadata"].get("namespace", "")
    before = ingested()
    server_gets = Probe.messages("server", "out", "get_object")

    reply = await synced.api_put(CLUSTER_A, obj)
    assert reply["accepted"] is True

    live = await eventually(
        lambda: cluster.get(kind, namespace, "from-backend"), what="the object in the cluster"
    )
    assert live["metadata"]["uid"]
    assert live["metadata"].get("labels") == obj["metadata"].get("labels")
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, kind, namespace, "from-backend"),
        what="the store checksum to converge on the cluster's",
    )
    # No echo: once the agent's watch has seen the write (the cluster's last change) and agent
    # and backend have nothing left to do, the object went up once, as the cluster's version of
    # the write (a copy-strategy kind whole, the others as a patch), and the watch's ADDED event
    # was only announced by a checksum the backend already holds (it asked for nothing).
    await synced.quiesce(CLUSTER_A)
    restated = "put_object" if kind == CONFIGMAPS else "patch_object"
    assert since(before) == {restated: 1, "new_checksum": 1}
    assert server_gets.delta == 0
    assert await synced.in_sync(CLUSTER_A)


async def test_backend_update_of_a_synced_object_converges(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    before = ingested()
    await synced.api_put(CLUSTER_A, configmap("settings", currency="CHF"))
    await eventually(
        lambda: (cluster.get(CONFIGMAPS, "shop", "settings") or {}).get("data")
        == {"currency": "CHF"},
        what="the update in the cluster",
    )
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "settings"),
        what="store converged on the cluster's version",
    )
    # The watch event of the write is no news to the agent: the configmap went up once.
    await synced.quiesce(CLUSTER_A)
    assert since(before) == {"put_object": 1}


async def test_backend_delete_removes_from_cluster_and_store(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    deletes = Probe.sample("clustersync_cluster_writes_total", verb="delete", result="ok")

    await synced.api_delete(CLUSTER_A, CONFIGMAPS, "shop", "settings")

    await eventually(
        lambda: cluster.get(CONFIGMAPS, "shop", "settings") is None, what="deletion in the cluster"
    )
    await eventually(lambda: _absent(synced, CONFIGMAPS, "shop", "settings"), what="row removed")
    assert deletes.delta == 1
    await synced.wait_synced(CLUSTER_A)


async def test_backend_write_is_routed_to_its_cluster_only(two_clusters: World) -> None:
    a, b = two_clusters.clusters[CLUSTER_A], two_clusters.clusters[CLUSTER_B]
    await two_clusters.api_put(CLUSTER_B, configmap("only-in-b", target="b"))
    await two_clusters.api_put(CLUSTER_A, configmap("only-in-a", target="a"))

    await eventually(lambda: b.get(CONFIGMAPS, "shop", "only-in-b"), what="write in cluster B")
    await eventually(lambda: a.get(CONFIGMAPS, "shop", "only-in-a"), what="write in cluster A")
    for name in (CLUSTER_A, CLUSTER_B):
        await two_clusters.wait_synced(name)
    assert a.get(CONFIGMAPS, "shop", "only-in-b") is None
    assert b.get(CONFIGMAPS, "shop", "only-in-a") is None
    assert await two_clusters.row(CLUSTER_A, CONFIGMAPS, "shop", "only-in-b") is None
    assert await two_clusters.row(CLUSTER_B, CONFIGMAPS, "shop", "only-in-a") is None


async def test_backend_write_waits_for_a_disconnected_agent(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    await synced.stop_agent(CLUSTER_A)
    await synced.wait_disconnected(CLUSTER_A)

    await synced.api_put(CLUSTER_A, configmap("while-away", note="queued"))
    # Stored at once, but nothing can reach the cluster while the agent is away.
    await eventually(
        lambda: synced.row(CLUSTER_A, CONFIGMAPS, "shop", "while-away"), what="write stored"
    )
    assert cluster.get(CONFIGMAPS, "shop", "while-away") is None

    synced.start_agent(CLUSTER_A)
    await eventually(
        lambda: cluster.get(CONFIGMAPS, "shop", "while-away"), what="queued write in the cluster"
    )
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "while-away"),
        what="store to hold the cluster's version",
    )
    await synced.wait_synced(CLUSTER_A)


async def test_backend_delete_waits_for_a_disconnected_agent(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    await synced.stop_agent(CLUSTER_A)
    await synced.wait_disconnected(CLUSTER_A)

    await synced.api_delete(CLUSTER_A, DEPLOYMENTS, "shop", "web")
    await eventually(
        lambda: _absent(synced, DEPLOYMENTS, "shop", "web"), what="row removed at once"
    )
    assert cluster.get(DEPLOYMENTS, "shop", "web") is not None

    synced.start_agent(CLUSTER_A)
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, "shop", "web") is None, what="queued delete applied"
    )
    await synced.wait_synced(CLUSTER_A)
    assert await synced.row(CLUSTER_A, DEPLOYMENTS, "shop", "web") is None


# ---------------------------------------------------------------- masked env values


async def test_masked_env_value_keeps_the_live_secret(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    live = cluster.get(DEPLOYMENTS, "shop", "api")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "hunter2"
    row = await synced.row(CLUSTER_A, DEPLOYMENTS, "shop", "api")
    assert row is not None and MASK.encode() in row.object and b"hunter2" not in row.object

    await synced.api_put(CLUSTER_A, deployment("api", secret=MASK, replicas=5))

    await eventually(
        lambda: (cluster.get(DEPLOYMENTS, "shop", "api") or {})["spec"]["replicas"] == 5,
        what="the backend's deployment in the cluster",
    )
    written = cluster.get(DEPLOYMENTS, "shop", "api")
    assert written is not None
    env = written["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "DB_PASSWORD", "value": "hunter2"}]
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "api"), what="store converged"
    )


async def test_masked_env_value_without_live_secret_is_refused(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    refused = Probe.bad_input("agent", "masked_value")
    puts = Probe.sample("clustersync_cluster_writes_total", verb="put", result="ok")

    await synced.api_put(CLUSTER_A, deployment("ghost", secret=MASK))

    await eventually(lambda: refused.delta >= 1, what="the agent to refuse the masked object")
    assert refused.delta == 1
    assert cluster.get(DEPLOYMENTS, "shop", "ghost") is None
    assert puts.delta == 0
    # The agent still works afterwards.
    cluster.patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 4}})
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web"), what="later change"
    )
    assert cluster.get(DEPLOYMENTS, "shop", "ghost") is None
    # The backend stored its write before the agent refused it; the agent's answer (the cluster
    # has no such object) removes it from the store without waiting for a reconciliation.

    async def forgotten() -> bool:
        return await synced.row(CLUSTER_A, DEPLOYMENTS, "shop", "ghost") is None

    await eventually(forgotten, what="the store to drop the refused object")
