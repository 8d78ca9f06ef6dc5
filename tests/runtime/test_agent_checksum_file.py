"""An agent with a data directory saves its checksums and takes them back when it restarts,
after re-hashing a sample; a file it cannot believe is discarded and the agent syncs anyway."""

from __future__ import annotations

import contextlib
from pathlib import Path

from clustersync.protocol.checksum_cache import Entry, decode, encode
from clustersync.runtime.agent import Agent

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import CLUSTER_A, CONFIGMAPS, World, configmap, sample, seed_objects
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import (  # type: ignore[no-redef]
        CLUSTER_A,
        CONFIGMAPS,
        World,
        configmap,
        sample,
        seed_objects,
    )

METRIC = "clustersync_agent_checksum_cache_total"


def count(outcome: str) -> float:
    return sample(METRIC, outcome=outcome)


def running(world: World, data_dir: Path) -> contextlib.AbstractAsyncContextManager[Agent]:
    return world.agent_with_data_dir(CLUSTER_A, data_dir)


async def _cluster(world: World) -> None:
    extra = [configmap(f"cm-{i}", n=str(i)) for i in range(30)]
    await world.add_cluster(CLUSTER_A, [*seed_objects(), *extra])


async def test_restart_takes_back_the_saved_checksums(world: World, tmp_path: Path) -> None:
    await _cluster(world)
    data = tmp_path / "agent-data"
    async with running(world, data) as first:
        await world.wait_synced(CLUSTER_A)
    held = set(first.session.checksum_entries())
    assert first.checksum_file is not None
    saved = decode(first.checksum_file.path.read_bytes(), first.checksum_file.fingerprint)
    assert set(saved) == held
    assert any(e.ref.kind == CONFIGMAPS and e.ref.name == "cm-7" for e in saved)

    # Changed while the agent is down: its saved checksum is for an older version.
    sandbox = world.clusters[CLUSTER_A].sandbox
    sandbox.patch("", "v1", "configmaps", "shop", "cm-7", {"data": {"n": "x"}})
    loaded = count("loaded")
    async with running(world, data) as second:
        await world.wait_synced(CLUSTER_A)
        assert count("loaded") == loaded + 1
        now = set(second.session.checksum_entries())
    unchanged = {e for e in saved if e.ref.name != "cm-7"}
    assert unchanged <= now  # taken back as saved (the objects did not change)
    [cm7] = [e for e in now if e.ref.kind == CONFIGMAPS and e.ref.name == "cm-7"]
    assert cm7 not in saved
    inventory = await world.backend_inventory(CLUSTER_A)
    assert inventory[cm7.ref] == cm7.checksum


async def test_a_sample_that_does_not_hash_as_saved_discards_the_file(
    world: World, tmp_path: Path
) -> None:
    await _cluster(world)
    data = tmp_path / "agent-data"
    async with running(world, data) as first:
        await world.wait_synced(CLUSTER_A)
    assert first.checksum_file is not None
    path, print_ = first.checksum_file.path, first.checksum_file.fingerprint
    real = decode(path.read_bytes(), print_)
    # A well-formed file whose checksums are wrong (say, from a buggy older agent).
    path.write_bytes(encode([Entry(e.ref, e.version, "0" * 64) for e in real], print_))
    mismatches = count("discarded_mismatch")
    async with running(world, data) as second:
        await world.wait_synced(CLUSTER_A)
        assert count("discarded_mismatch") == mismatches + 1
        assert set(second.session.checksum_entries()) >= set(real)
    inventory = await world.backend_inventory(CLUSTER_A)
    assert "0" * 64 not in inventory.values()


async def test_a_torn_file_is_ignored_and_the_agent_syncs(world: World, tmp_path: Path) -> None:
    await _cluster(world)
    data = tmp_path / "agent-data"
    async with running(world, data) as first:
        await world.wait_synced(CLUSTER_A)
    assert first.checksum_file is not None
    path = first.checksum_file.path
    path.write_bytes(path.read_bytes()[:-100])
    torn = count("discarded_digest")
    async with running(world, data):
        world.clusters[CLUSTER_A].sandbox.create(configmap("after-restart"))
        await world.wait_synced(CLUSTER_A)
        assert count("discarded_digest") == torn + 1
    assert path.exists()  # saved afresh on the way out


async def test_a_partial_temporary_file_from_a_killed_save_is_removed_at_restart(
    world: World, tmp_path: Path
) -> None:
    await _cluster(world)
    data = tmp_path / "agent-data"
    async with running(world, data) as first:
        await world.wait_synced(CLUSTER_A)
    assert first.checksum_file is not None
    saved = first.checksum_file.path.read_bytes()
    # What SIGKILL in the middle of the next save leaves: half a file under the temporary name.
    first.checksum_file.temporary.write_bytes(saved[: len(saved) // 2])
    loaded = count("loaded")
    async with running(world, data) as second:
        await world.wait_synced(CLUSTER_A)
        assert count("loaded") == loaded + 1  # the last whole file
        assert second.checksum_file is not None
        assert not second.checksum_file.temporary.exists()
