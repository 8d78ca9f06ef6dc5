"""wss:// end to end: a backend serving TLS, an agent trusting its private CA, and one that does
not trust it (it keeps retrying, never sending anything in the clear)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.link.client import LinkError
from clustersync.model import Kind
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.shaping import NamespaceRules
from clustersync.runtime.agent import Agent
from clustersync.runtime.backend import Backend
from clustersync.runtime.config import AgentConfig, ResourceSpec
from clustersync.runtime.listener import ListenerLimits
from clustersync.sandbox import Sandbox
from clustersync.sandbox.tls import TlsMaterial, tls_material

try:
    from tests.runtime.harness import Probe, eventually
except ImportError:
    from harness import Probe, eventually  # type: ignore[no-redef]

CONFIGMAPS = Kind("", "v1", "configmaps")
TOKEN = "tls-agent-token"


@pytest.fixture
def tls() -> TlsMaterial:
    material = tls_material()
    assert material is not None, "the openssl tool is needed (Debian package openssl)"
    return material


@pytest.fixture
async def parts(tmp_path: Path, tls: TlsMaterial) -> AsyncIterator[tuple[Backend, KubeClient]]:
    store = await open_sqlite(f"sqlite:///{tmp_path}/tls.db")
    bus = MemoryBus()
    backend = Backend(bus, store, TokenTable({TOKEN: Identity("acme", "secure")}))
    await backend.start(tls=tls.server_context())
    sandbox = Sandbox()
    await sandbox.start()
    sandbox.write_kubeconfig(tmp_path / "kubeconfig")
    kube = await KubeClient.connect(str(tmp_path / "kubeconfig"))
    sandbox.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "over-tls", "namespace": "default"},
            "data": {"a": "b"},
        }
    )
    try:
        yield backend, kube
    finally:
        await kube.close()
        await sandbox.stop()
        await backend.stop()
        await bus.close()
        await store.close()


def config(backend: Backend, **extra: object) -> AgentConfig:
    return AgentConfig(
        server=backend.ws_url,
        account="acme",
        cluster="secure",
        access_key=TOKEN,
        resources=(ResourceSpec(CONFIGMAPS, Strategy.COPY),),
        rules=NamespaceRules(),
        coalesce_quiet=0.05,
        coalesce_max_wait=0.2,
        **extra,  # type: ignore[arg-type]
    )


async def test_agent_syncs_over_wss_with_a_private_ca(
    parts: tuple[Backend, KubeClient], tls: TlsMaterial, tmp_path: Path
) -> None:
    backend, kube = parts
    assert backend.ws_url.startswith("wss://")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(tls.ca_pem)
    agent = Agent(config(backend, ca_file=str(ca_file)), kube)
    task = asyncio.create_task(agent.run())
    try:

        async def stored() -> bool:
            rows = await backend.store.list("acme", "secure", CONFIGMAPS)
            return any(r.key.ref.name == "over-tls" for r in rows)

        await eventually(stored, what="the configmap to arrive over wss")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_agent_refuses_a_server_it_cannot_verify(parts: tuple[Backend, KubeClient]) -> None:
    backend, kube = parts
    agent = Agent(config(backend, first_connect_timeout=0.5), kube)  # system CAs only
    with pytest.raises(LinkError, match="never connected"):
        await agent.run()
    assert agent.connections == 0
    assert backend.server.connections == {}


async def test_a_client_that_never_finishes_the_tls_handshake_is_cut_off(
    parts: tuple[Backend, KubeClient],
) -> None:
    backend, _ = parts
    backend.gate.limits = ListenerLimits(header_timeout=0.5)
    failed = Probe.sample("clustersync_listener_events_total", listener="backend",
                          reason="handshake_failed")
    host, port = backend.url.removeprefix("https://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by the server, not by us
    finally:
        writer.close()
    await eventually(lambda: failed.delta == 1, what="the handshake timeout counted")
