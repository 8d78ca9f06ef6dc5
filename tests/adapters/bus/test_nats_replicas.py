"""The NATS bus on a three-node JetStream cluster: a stream the operator created with three
replicas keeps them when clustersync opens (and updates) it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from clustersync.adapters.bus.nats import open_nats, stream_subjects

try:
    from tests.servers import free_port, nats_server_binary
except ImportError:  # plain `pytest`: tests/ itself is on sys.path
    from servers import free_port, nats_server_binary  # type: ignore[no-redef]

STREAM = "CLUSTERSYNC"


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[str]]:
    """Three routed nats-server processes with JetStream; yields their client URLs."""
    ports = [(free_port(), free_port()) for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{route}" for _, route in ports)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, (client, route) in enumerate(ports):
            store = tmp_path / f"n{i}"
            store.mkdir()
            procs.append(subprocess.Popen(
                [str(nats_server_binary()), "-js", "-a", "127.0.0.1", "-p", str(client),
                 "--server_name", f"n{i}", "--cluster_name", "cs-test",
                 "--cluster", f"nats://127.0.0.1:{route}", "--routes", routes,
                 "-sd", str(store), "-l", str(tmp_path / f"n{i}.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        yield [f"nats://127.0.0.1:{client}" for client, _ in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
async def replicated_stream(nats_cluster: list[str]) -> AsyncIterator[str]:
    """The stream pre-created by an operator with three replicas (as docs/deploy.md says);
    retried until the cluster has elected its JetStream meta leader."""
    config = StreamConfig(name=STREAM, subjects=stream_subjects("cs.>"),
                          storage=StorageType.FILE, num_replicas=3)
    async with asyncio.timeout(30):
        while True:  # until the servers listen and have elected a JetStream meta leader
            try:
                nc = await nats.connect(nats_cluster[0], connect_timeout=1,
                                        max_reconnect_attempts=0)
            except (nats.errors.Error, OSError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            try:
                await nc.jetstream(timeout=2).add_stream(config)
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.2)
            finally:
                await nc.close()
    yield nats_cluster[0]


async def test_opening_keeps_the_operators_replicas(replicated_stream: str) -> None:
    bus = await open_nats(replicated_stream, stream=STREAM, max_age=3600)
    try:
        seq = await bus.publish("cs.up.acct.c1.0", b"x")
        assert seq > 0
    finally:
        await bus.close()
    nc = await nats.connect(replicated_stream)
    try:
        config = (await nc.jetstream().stream_info(STREAM)).config
    finally:
        await nc.close()
    assert config.num_replicas == 3
    assert config.max_age == 3600  # clustersync's own settings were applied
