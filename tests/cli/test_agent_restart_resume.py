"""A real ``clustersync agent`` process with a data directory, stopped cleanly (it saves its
informer caches), restarted, killed with ``kill -9`` between two saves, and restarted again while
the cluster changes: it resumes from the older saved cache (the sandbox replays everything since)
and the store converges. The check reads the store's SQLite file against the sandbox's list,
independently of the project's shaping and checksums."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from clustersync.adapters.kube.client import KubeClient

from .clitools import Process
from .conftest import Cluster, start_backend, write_agent_config
from .test_backend_restart import converge, put, ref


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(str(cluster.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


def agent_config(tmp_path: Path, backend_url: str, cluster: Cluster) -> Path:
    path = write_agent_config(tmp_path / "agent.yaml", backend_url, cluster.kubeconfig)
    config = yaml.safe_load(path.read_text())
    config["dataDir"] = str(tmp_path / "agent-data")
    path.write_text(yaml.safe_dump(config))
    return path


def output(process: Process) -> str:
    return process.stdout + process.stderr


async def test_kill_9_between_saves_then_restart_resumes_and_converges(
    tmp_path: Path, cluster: Cluster, kube: KubeClient
) -> None:
    backend = await start_backend(tmp_path)
    config = agent_config(tmp_path, backend.url, cluster)
    saved = tmp_path / "agent-data" / "informer.core.v1.configmaps.v1"
    agents: list[Process] = []

    async def start(n: int) -> Process:
        agent = Process(f"agent-{n}", ["agent", "--config", str(config)], tmp_path)
        agents.append(agent)
        return await agent.start()

    try:
        first = await start(1)
        for i in range(20):
            await put(kube, f"cm-{i}", "first")
        await converge(backend, kube, "with the first agent")
        assert await first.signal(signal.SIGTERM) == 0, first.describe()
        assert saved.exists()  # saved on the way out

        second = await start(2)
        for i in range(5):
            await put(kube, f"cm-{i}", "second")
        await converge(backend, kube, "with the second agent")
        assert "loaded" in output(second) and "configmaps" in output(second)
        assert await second.signal(signal.SIGKILL) == -signal.SIGKILL

        # While no agent runs: the last saved cache is older than all of this.
        for i in range(5, 10):
            await put(kube, f"cm-{i}", "while-down")
        for i in range(10, 13):
            assert await kube.delete(ref(f"cm-{i}"))
        for i in range(3):
            await put(kube, f"new-{i}", "while-down")

        third = await start(3)
        after = await converge(backend, kube, "after the kill -9 and restart")
        assert not {("default", f"cm-{i}") for i in range(10, 13)} & after.keys()
        assert {("default", f"new-{i}") for i in range(3)} <= after.keys()
        log = output(third)
        assert "ignoring the saved cache" not in log, third.describe()
        assert "cannot resume" not in log, third.describe()
        assert "v1/configmaps resumed from the saved cache without a list" in log, log
    finally:
        for agent in agents:
            await agent.stop()
        await backend.process.stop()
