"""Bytes on the wire for one-field changes, with and without permessage-deflate.

A counting TCP proxy sits between the agent and the server, so the figures are real socket
bytes (frame headers and compression included), not payload sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.pods import pod
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.store.sqlite import SqliteStore, open_sqlite
from clustersync.model import Kind
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.shaping import NamespaceRules, shape
from clustersync.runtime.agent import Agent
from clustersync.runtime.backend import Backend
from clustersync.runtime.config import AgentConfig, ResourceSpec
from clustersync.sandbox import Sandbox

PODS = Kind("", "v1", "pods")


class CountingProxy:
    def __init__(self, port: int) -> None:
        self.target = port
        self.up = 0  # agent to server
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if count:
                        self.up += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


async def measure(compress: bool, n: int = 200) -> tuple[int, int]:
    """(bytes sent by the agent for n one-field changes, bytes of the n shaped objects)."""
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Sandbox()
        await sandbox.start()
        sandbox.load([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}])
        sandbox.load([pod(i) for i in range(n)])
        sandbox.write_kubeconfig(Path(tmp) / "kubeconfig")
        store = await open_sqlite(f"sqlite:///{tmp}/wire.db")
        bus = MemoryBus()
        backend = Backend(bus, store, TokenTable({"wire-agent-token": Identity("a", "c")}))
        await backend.start()
        proxy = CountingProxy(int(backend.url.rsplit(":", 1)[1]))
        await proxy.start()
        kube = await KubeClient.connect(str(Path(tmp) / "kubeconfig"))
        config = AgentConfig(
            server=f"ws://127.0.0.1:{proxy.port}/",
            account="a",
            cluster="c",
            access_key="wire-agent-token",
            resources=(ResourceSpec(PODS, Strategy.PATCH),),
            rules=NamespaceRules(),
            coalesce_quiet=0.0,
            coalesce_max_wait=0.0,
            compress=compress,
        )
        agent = Agent(config, kube)
        task = asyncio.create_task(agent.run())
        try:
            while len(await store.list("a", "c", PODS)) < n or agent.outbox:
                await asyncio.sleep(0.05)
            # First change of each pod: sets the shadow with a whole object (not measured).
            await _change_all(sandbox, store, n, "warm")
            before = proxy.up
            await _change_all(sandbox, store, n, "canary")
            sent = proxy.up - before
            size = sum(len(orjson.dumps(shape(PODS, o))) for o in sandbox.list("", "v1", "pods"))
            return sent, size
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await kube.close()
            await proxy.stop()
            await backend.stop()
            await bus.close()
            await store.close()
            await sandbox.stop()


async def _change_all(sandbox: Sandbox, store: SqliteStore, n: int, value: str) -> None:
    for i in range(n):
        sandbox.patch(
            "", "v1", "pods", "bench", f"pod-{i:06d}", {"metadata": {"labels": {"release": value}}}
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = await store.list("a", "c", PODS)
        if sum(orjson.loads(r.object)["metadata"]["labels"]["release"] == value for r in rows) == n:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("changes did not reach the store")


async def run() -> None:
    print("\none-field change on each of 200 pods: bytes the agent's socket sent")
    for compress in (False, True):
        sent, size = await measure(compress)
        label = "with permessage-deflate" if compress else "plain frames"
        print(
            f"  {label:<44} {sent / 200:>12,.0f} B   | shaped object {size / 200:>14,.0f} B"
            f"   = {100 * sent / size:.1f}%  (target < 5%)"
        )
