"""``clustersync backend`` (embedded bus, SQLite) restarted under a connected agent, cleanly and
with ``kill -9``: changes made afterwards in the cluster still reach the store.

The embedded bus starts counting again with every process; before versions carried an epoch,
every later modify or delete was refused by the store as older than what it held. The check is
independent of the project's shaping and checksums: the store's rows, read from the SQLite file,
must name exactly the configmaps the sandbox serves, with their uid and resourceVersion.
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clustersync.adapters.kube.client import KubeClient
from clustersync.model import Kind, ObjectRef

from .clitools import Process, wait_until
from .conftest import (
    ACCOUNT,
    CLUSTER,
    Backend,
    Cluster,
    start_backend,
    start_sandbox,
    write_agent_config,
)

CONFIGMAPS = Kind("", "v1", "configmaps")
SKIPPED_NAMESPACES = {"kube-system", "kube-public"}  # excluded by the agent's config
CONVERGE = 60.0  # includes the agent's reconnect backoff

Versions = dict[tuple[str, str], tuple[str, str]]  # (namespace, name) -> (uid, resourceVersion)


def stored(db: Path) -> Versions:
    """The live configmap rows of the test cluster, straight from the database file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute(
            "SELECT namespace, name, uid, resource_version FROM objects WHERE account = ? "
            "AND cluster = ? AND api_group = '' AND resource = 'configmaps' AND deleted = 0",
            (ACCOUNT, CLUSTER),
        ).fetchall()
    return {(ns, name): (uid, rv) for ns, name, uid, rv in rows}


async def served(kube: KubeClient) -> Versions:
    items, _ = await kube.list(CONFIGMAPS)
    return {
        (meta["namespace"], meta["name"]): (meta["uid"], meta["resourceVersion"])
        for meta in (item["metadata"] for item in items)
        if meta["namespace"] not in SKIPPED_NAMESPACES
    }


async def converge(backend: Backend, kube: KubeClient, what: str) -> Versions:
    async def same() -> bool:
        return stored(backend.db) == await served(kube)

    await wait_until(same, f"the store to match the cluster {what}", CONVERGE)
    return stored(backend.db)


def configmap(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"value": value},
    }


def ref(name: str) -> ObjectRef:
    return ObjectRef(CONFIGMAPS, "default", name)


async def put(kube: KubeClient, name: str, value: str) -> None:
    current = await kube.get(ref(name))
    if current is None:
        await kube.create(ref(name), configmap(name, value))
    else:
        current["data"] = {"value": value}
        await kube.replace(ref(name), current)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    started = await start_sandbox(tmp_path)
    try:
        yield started
    finally:
        await started.process.stop()


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(str(cluster.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["clean", "kill-9"])
async def test_changes_after_a_backend_restart_reach_the_store(
    tmp_path: Path, cluster: Cluster, kube: KubeClient, how: signal.Signals
) -> None:
    backend = await start_backend(tmp_path)
    config = write_agent_config(tmp_path / "agent.yaml", backend.url, cluster.kubeconfig)
    agent = Process("agent", ["agent", "--config", str(config)], tmp_path)
    await agent.start()
    try:
        # Enough traffic that the first bus's counter is well ahead of what a fresh counter
        # reaches while the test runs.
        for round_ in range(3):
            for i in range(30):
                await put(kube, f"cm-{i}", f"round-{round_}")
        before = await converge(backend, kube, "before the restart")
        assert len(before) >= 30

        status = await backend.process.signal(how)
        assert status in (0, -how), backend.process.describe()
        port = int(backend.url.rsplit(":", 1)[1])
        backend = await start_backend(tmp_path, port=port)  # same port, same database

        for i in range(10):
            await put(kube, f"cm-{i}", "after-restart")
        for i in range(10, 15):
            assert await kube.delete(ref(f"cm-{i}"))
        for i in range(3):
            await put(kube, f"new-{i}", "after-restart")
        after = await converge(backend, kube, "after the restart")

        assert not {("default", f"cm-{i}") for i in range(10, 15)} & after.keys()
        assert {("default", f"new-{i}") for i in range(3)} <= after.keys()
        changed = [key for key in after if before.get(key, after[key]) != after[key]]
        assert len(changed) == 10  # cm-0..9 modified: newer resourceVersions stored
    finally:
        await agent.stop()
        await backend.process.stop()
