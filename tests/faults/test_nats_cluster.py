"""A three-node NATS JetStream cluster, stream replicas 3, loses a node while a cluster syncs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType, StreamConfig
from tests.faults.report import record
from tests.faults.topology import (
    CONFIGMAPS,
    configmap,
    make_fleet,
    scaled_out_backend,
    seed,
    until,
)
from tests.servers import RunningNatsCluster, start_nats_cluster

STREAM = "CLUSTERSYNC"  # the stream name the backend uses by default


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[RunningNatsCluster]:
    cluster = start_nats_cluster(tmp_path / "nats-cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


async def stream_replicas_and_leader(url: str) -> tuple[int, str]:
    """The stream's configured replicas and its leader, once a leader is elected and every
    replica is current (scaling a stream up takes a moment)."""
    found: list[tuple[int, str]] = []

    async def settled() -> bool:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(STREAM)
        finally:
            await nc.close()
        cluster = info.cluster
        if cluster is None or cluster.leader is None:
            return False
        peers = cluster.replicas or []
        if len(peers) + 1 < (info.config.num_replicas or 1) or not all(p.current
                                                                       for p in peers):
            return False
        found.append((info.config.num_replicas or 1, cluster.leader))
        return True

    await until(settled, "the stream to elect a leader with current replicas")
    return found[-1]


async def replicate_stream(url: str) -> None:
    """What an operator does for production: the stream on three nodes (created, or edited
    like ``nats stream edit --replicas 3``)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        try:
            config = (await js.stream_info(STREAM)).config
        except nats.js.errors.NotFoundError:
            await js.add_stream(StreamConfig(name=STREAM, subjects=["cs.>", "cs"],
                                             storage=StorageType.FILE, num_replicas=3))
        else:
            config.num_replicas = 3
            await js.update_stream(config)
    finally:
        await nc.close()


async def test_nats_node_lost_during_sync(tmp_path: Path, tokens: Path,
                                          nats_cluster: RunningNatsCluster,
                                          pg_database_url: str,
                                          request: pytest.FixtureRequest) -> None:
    await replicate_stream(nats_cluster.url)
    backend = await scaled_out_backend(tmp_path, tokens, nats_cluster.url, pg_database_url)
    fleet = await make_fleet(tmp_path, backend)
    try:
        replicas, leader = await stream_replicas_and_leader(nats_cluster.url)
        assert replicas == 3, f"the backend changed the stream to {replicas} replica(s)"
        await fleet.add_cluster("c1", seed(40))
        await fleet.start_agent("c1", wait=False)  # the initial sync is under way ...

        victim = next(n for n in nats_cluster.nodes if n.name == leader)
        await asyncio.to_thread(victim.kill)  # ... when the stream leader's node dies
        sandbox = fleet.sandboxes["c1"]
        sandbox.create(configmap("during-failover"))
        sandbox.patch("", "v1", "configmaps", "default", "cm-1", {"data": {"v": "failover"}})
        sandbox.delete("", "v1", "configmaps", "default", "cm-2")
        await fleet.push("c1", configmap("pushed-during-failover", v="1"), CONFIGMAPS)
        # A Raft election, then every durable's consumer found again: measured 5 to 35 s here.
        await fleet.checker.converged(timeout=90)
    finally:
        record(request.node.name, fleet.checker)
        fleet.print_logs()
        await fleet.stop()
