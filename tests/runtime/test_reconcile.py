"""Repairs after the agent missed changes: reconciliation on connect, and relists after a 410."""

from __future__ import annotations

import orjson

from clustersync.adapters.store import Delete
from clustersync.model import Kind
from clustersync.protocol.agent_types import Strategy
from clustersync.runtime.config import ResourceSpec

try:
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        DEPLOYMENTS,
        PROFILES,
        RESOURCES,
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
        DEPLOYMENTS,
        PROFILES,
        RESOURCES,
        Probe,
        World,
        configmap,
        eventually,
    )


async def test_reconnect_repairs_changes_made_while_the_agent_was_down(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    await synced.stop_agent(CLUSTER_A)
    await synced.wait_disconnected(CLUSTER_A)

    created = cluster.create(configmap("born-offline", when="down"))
    cluster.patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 6}})
    cluster.delete(PROFILES, "shop", "web-profile")
    assert not await synced.in_sync(CLUSTER_A)
    removals = Probe.messages("agent", "out", "object_deleted")

    synced.start_agent(CLUSTER_A)
    await synced.wait_synced(CLUSTER_A)

    row = await synced.row(CLUSTER_A, CONFIGMAPS, "shop", "born-offline")
    assert row is not None and row.uid == created["metadata"]["uid"]
    web = await synced.row(CLUSTER_A, DEPLOYMENTS, "shop", "web")
    assert web is not None and orjson.loads(web.object)["spec"]["replicas"] == 6
    assert await synced.row(CLUSTER_A, PROFILES, "shop", "web-profile") is None
    # Only reconciliation can know about the deletion: no watch event exists for it.
    assert removals.delta >= 1
    assert synced.clusters[CLUSTER_A].agent is not None
    assert synced.clusters[CLUSTER_A].agent.connections == 1


async def test_deletion_during_a_broken_watch_is_found_by_the_relist(synced: World) -> None:
    cluster = synced.clusters[CLUSTER_A]
    agent = cluster.agent
    assert agent is not None
    informer = agent.informers[CONFIGMAPS]
    relists = informer.relists_after_gone
    lists = informer.lists

    # End every watch before the deletion so no stream can carry it, then compact the history:
    # the informers' resume points are now too old and their next watch gets 410. The three
    # steps run without yielding, so no informer can re-watch in between.
    cluster.sandbox.store.close_watchers()
    cluster.delete(CONFIGMAPS, "shop", "flags")
    cluster.sandbox.compact()
    await cluster.sandbox.drop_watches()

    await eventually(lambda: _gone(synced), what="the deletion to reach the store")
    assert informer.relists_after_gone > relists, "the informer never saw a 410"
    assert informer.lists > lists
    assert ("shop", "flags") not in informer.cache
    # Every informer recovered: later changes of any kind still sync.
    cluster.patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 8}})
    cluster.create(configmap("after-relist"))
    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web"), what="later patch"
    )
    await synced.wait_synced(CLUSTER_A)


async def _gone(world: World) -> bool:
    return await world.row(CLUSTER_A, CONFIGMAPS, "shop", "flags") is None


async def test_first_sync_sends_whole_objects_without_checksum_round_trips(world: World) -> None:
    """Our agent asks for the backend's inventory of each kind and sends only what is missing;
    no object needs a NewChecksum and a GetObject first (kubescape's path, kept for its peers)."""
    announced = Probe.messages("agent", "out", "new_checksum")
    requested = Probe.messages("server", "out", "get_object")
    sent_whole = Probe.messages("agent", "out", "put_object")
    await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    assert announced.delta == 0
    assert requested.delta == 0
    assert sent_whole.delta == len(await world.backend_inventory(CLUSTER_A))


async def test_a_kind_the_cluster_does_not_serve_holds_back_only_itself(world: World) -> None:
    await world.add_cluster(CLUSTER_A)
    missing = Kind("example.com", "v1", "widgets")  # no such resource in the sandbox
    agent = world.start_agent(
        CLUSTER_A, resources=(*RESOURCES, ResourceSpec(missing, Strategy.COPY))
    )
    await world.wait_synced(CLUSTER_A)
    assert not agent.informers[missing].synced.is_set()
    assert not agent.ready()  # not every resource could be listed


async def test_periodic_resync_repairs_the_store_without_a_reconnect(world: World) -> None:
    await world.add_cluster(CLUSTER_A)
    agent = world.start_agent(CLUSTER_A, resync_interval=0.2)

    async def stored() -> bool:
        return await world.row(CLUSTER_A, CONFIGMAPS, "shop", "settings") is not None

    await eventually(stored, what="the first sync")  # (resyncs never let traffic settle)
    # The backend loses a row behind everyone's back (a restore from an old backup, say).
    row = await world.row(CLUSTER_A, CONFIGMAPS, "shop", "settings")
    assert row is not None
    await world.store.apply([Delete(row.key, row.seq + 1)])
    assert await world.row(CLUSTER_A, CONFIGMAPS, "shop", "settings") is None

    await eventually(stored, what="the periodic resync to put the object back")
    assert agent.connections == 1  # no reconnect was needed


async def test_a_fresh_agent_gets_the_whole_inventory_and_a_reconnect_only_what_differs(
    synced: World,
) -> None:
    """A fresh agent has hashed nothing, so it asks without digests and the backend lists every
    object it holds; yet nothing it already holds is sent again. A reconnect of the same agent
    carries digests: an unchanged cluster gets an empty answer."""
    listed = Probe.messages("server", "out", "new_checksum")
    sent_whole = Probe.messages("agent", "out", "put_object")
    held = len(await synced.backend_inventory(CLUSTER_A))
    agent = await synced.restart_agent(CLUSTER_A)
    await synced.wait_synced(CLUSTER_A)
    await eventually(lambda: listed.delta == held, what="the whole inventory listed")
    assert sent_whole.delta == 0

    listed = Probe.messages("server", "out", "new_checksum")
    empty_answers = Probe.messages("server", "out", "batch")
    old = synced.backend.server.connections[(ACCOUNT, CLUSTER_A)]
    await old.ws.close()
    await eventually(lambda: agent.connections == 2, what="the agent to redial")
    await eventually(
        lambda: empty_answers.delta == len(RESOURCES), what="an empty answer for every kind"
    )
    assert listed.delta == 0
    assert sent_whole.delta == 0


async def test_objects_sent_by_the_first_sync_share_the_informers_entries_as_shadows(
    synced: World,
) -> None:
    cluster = synced.clusters[CLUSTER_A]
    agent = cluster.agent
    assert agent is not None
    shadows = agent.session.shadows
    assert len(shadows) > 0 and shadows.packed_size() == 0  # no packed copy of any of them
    patches = Probe.messages("agent", "out", "patch_object")

    cluster.patch(DEPLOYMENTS, "shop", "web", {"spec": {"replicas": 5}})

    await eventually(
        lambda: synced.matches_live(CLUSTER_A, DEPLOYMENTS, "shop", "web"),
        what="the change stored",
    )
    assert patches.delta >= 1  # a patch against the shared shadow, read back from the informer
    assert agent.session.synced.unreadable_shadows == 0
