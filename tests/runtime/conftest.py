"""Fixtures for the end-to-end runtime tests: a backend, sandbox clusters and agents.

Every fixture stops what it started, in reverse order, even when the test fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import CLUSTER_A, CLUSTER_B, World
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import CLUSTER_A, CLUSTER_B, World  # type: ignore[no-redef]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A running backend (MemoryBus + SQLite + tokens) with no clusters yet."""
    w = World(tmp_path)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def synced(world: World) -> World:
    """Cluster A with its agent running and the backend holding exactly the cluster."""
    await world.add_cluster(CLUSTER_A)
    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    return world


@pytest.fixture
async def two_clusters(world: World) -> World:
    """Clusters A and B, each with its own sandbox and agent, both in sync."""
    for name in (CLUSTER_A, CLUSTER_B):
        await world.add_cluster(name)
        world.start_agent(name)
    for name in (CLUSTER_A, CLUSTER_B):
        await world.wait_synced(name)
    return world
