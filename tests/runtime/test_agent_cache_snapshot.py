"""An agent with a data directory saves each informer's cache and, restarted, watches from it
instead of listing; what changed while it was down still reaches the backend (checked against
what the sandbox serves, by the harness's independent checker), and a file it cannot use is
ignored with a log line and a metric."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from clustersync.protocol.cache_snapshot import decode, encode, fingerprint
from clustersync.runtime.agent import Agent

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import (
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        World,
        configmap,
        eventually,
        sample,
        seed_objects,
    )
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        ACCOUNT,
        CLUSTER_A,
        CONFIGMAPS,
        World,
        configmap,
        eventually,
        sample,
        seed_objects,
    )

METRIC = "clustersync_agent_informer_snapshot_total"


def count(outcome: str) -> float:
    return sample(METRIC, outcome=outcome)


def running(world: World, data_dir: Path) -> contextlib.AbstractAsyncContextManager[Agent]:
    return world.agent_with_data_dir(CLUSTER_A, data_dir)


async def _first_run(world: World, data: Path) -> Agent:
    extra = [configmap(f"cm-{i}", n=str(i)) for i in range(30)]
    await world.add_cluster(CLUSTER_A, [*seed_objects(), *extra])
    async with running(world, data) as first:
        await world.wait_synced(CLUSTER_A)
    return first


def _resumable(agent: Agent) -> list[object]:
    """The kinds whose cache the agent saved (a kind the sandbox does not serve has none)."""
    return [kind for kind, file in agent.cache_files.items() if file.path.exists()]


async def test_restart_on_an_unchanged_cluster_watches_without_listing(
    world: World, tmp_path: Path
) -> None:
    data = tmp_path / "agent-data"
    first = await _first_run(world, data)
    saved = _resumable(first)
    assert CONFIGMAPS in saved and len(saved) >= 3
    resumed = count("resumed")
    async with running(world, data) as second:
        await world.wait_synced(CLUSTER_A)
        assert all(second.informers[kind].lists == 0 for kind in saved)
        assert count("resumed") == resumed + len(saved)
        # The restored cache holds what the first agent held.
        assert set(second.informers[CONFIGMAPS].cache) == set(first.informers[CONFIGMAPS].cache)
        assert second.ready()  # /readyz follows the resumed watches


async def test_changes_made_while_the_agent_was_down_reach_the_backend(
    world: World, tmp_path: Path
) -> None:
    data = tmp_path / "agent-data"
    await _first_run(world, data)
    cluster = world.clusters[CLUSTER_A]
    cluster.patch(CONFIGMAPS, "shop", "cm-1", {"data": {"n": "changed-while-down"}})
    cluster.delete(CONFIGMAPS, "shop", "cm-2")
    cluster.create(configmap("born-while-down", n="new"))
    async with running(world, data) as second:
        await world.wait_synced(CLUSTER_A)  # the store matches the sandbox, object by object
        assert second.informers[CONFIGMAPS].lists == 0


async def test_a_cache_the_api_server_no_longer_has_history_for_falls_back_to_a_list(
    world: World, tmp_path: Path
) -> None:
    data = tmp_path / "agent-data"
    await _first_run(world, data)
    cluster = world.clusters[CLUSTER_A]
    cluster.patch(CONFIGMAPS, "shop", "cm-3", {"data": {"n": "changed-while-down"}})
    cluster.delete(CONFIGMAPS, "shop", "cm-4")
    cluster.create(configmap("born-while-down", n="new"))
    cluster.sandbox.compact()  # every saved resourceVersion is now too old: 410
    relisted = count("relisted")
    async with running(world, data) as second:
        await world.wait_synced(CLUSTER_A)
        informer = second.informers[CONFIGMAPS]
        assert (informer.lists, informer.resumes_abandoned) == (1, 1)
        assert count("relisted") >= relisted + 1


def _foreign(path: Path, print_: str) -> None:
    """The same kind's file, written by an agent of another cluster."""
    other = fingerprint(CONFIGMAPS, ACCOUNT, "another-cluster", "https://elsewhere:6443")
    path.write_bytes(encode(decode(path.read_bytes(), print_), other))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path, _: path.write_bytes(path.read_bytes()[:-100]), "digest"),
        (lambda path, _: path.write_bytes(path.read_bytes()[:10]), "truncated"),
        (_foreign, "fingerprint"),
    ],
    ids=["torn", "truncated", "foreign-cluster"],
)
async def test_an_unusable_file_is_ignored_with_a_log_line_and_a_metric(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, reason  # type: ignore[no-untyped-def]
) -> None:
    data = tmp_path / "agent-data"
    first = await _first_run(world, data)
    file = first.cache_files[CONFIGMAPS]
    damage(file.path, file.fingerprint)
    discarded = count(f"discarded_{reason}")
    with caplog.at_level(logging.WARNING, logger="clustersync.agent"):
        async with running(world, data) as second:
            world.clusters[CLUSTER_A].create(configmap("after-restart"))
            await world.wait_synced(CLUSTER_A)
            assert second.informers[CONFIGMAPS].lists == 1
    assert count(f"discarded_{reason}") == discarded + 1
    assert any("ignoring the saved cache" in r.getMessage() for r in caplog.records)
    assert file.path.exists()  # saved afresh on the way out
    decode(file.path.read_bytes(), file.fingerprint)  # and usable again


async def test_a_running_agent_saves_its_caches_periodically_when_they_moved(
    world: World, tmp_path: Path
) -> None:
    data = tmp_path / "agent-data"
    await world.add_cluster(CLUSTER_A, seed_objects())
    cluster = world.clusters[CLUSTER_A]
    agent = Agent(world.agent_config(CLUSTER_A, data_dir=str(data)), cluster.kube)
    agent.checksum_save_interval = 0.05
    task = asyncio.create_task(agent.run())
    cluster.agent, cluster.task = agent, task  # the agent wait_synced watches
    try:
        file = agent.cache_files[CONFIGMAPS]
        await world.wait_synced(CLUSTER_A)
        changed = cluster.patch(CONFIGMAPS, "shop", "settings", {"data": {"currency": "CHF"}})
        version = changed["metadata"]["resourceVersion"]

        def saved_with_change() -> bool:
            if not file.path.exists():
                return False
            snapshot = decode(file.path.read_bytes(), file.fingerprint)
            return int(snapshot.resource_version) >= int(version)

        await eventually(saved_with_change, what="a periodic save holding the change")
        snapshot = decode(file.path.read_bytes(), file.fingerprint)
        entry = dict(snapshot.entries)[("shop", "settings")]
        assert version.encode() in entry[:16]  # the entry's resourceVersion, as served
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
