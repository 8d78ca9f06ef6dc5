"""Initial sync and unchanged reconnect, end to end through real sockets, beside raw limits."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import REGISTRY

from benchmarks.pods import pod
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.store import ObjectKey, StoredObject
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model import Kind, ObjectRef
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.shaping import NamespaceRules
from clustersync.runtime.agent import Agent
from clustersync.runtime.backend import Backend
from clustersync.runtime.config import AgentConfig, ResourceSpec
from clustersync.sandbox import Sandbox

PODS = Kind("", "v1", "pods")


def _bytes(direction: str) -> float:
    value = REGISTRY.get_sample_value(
        "clustersync_frame_bytes_total", {"component": "agent", "direction": direction}
    )
    return value or 0.0


async def raw_websocket_rate(frame: bytes, n: int) -> float:
    """One-way binary frames per second over loopback with aiohttp on both ends."""
    done = asyncio.Event()

    async def sink(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        count = 0
        async for _ in ws:
            count += 1
            if count == n:
                done.set()
        return ws

    app = web.Application()
    app.router.add_get("/", sink)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{port}/") as ws:
        start = time.perf_counter()
        for _ in range(n):
            await ws.send_bytes(frame)
        await done.wait()
        elapsed = time.perf_counter() - start
    await runner.cleanup()
    return n / elapsed


async def raw_store_rate(n: int, tmp: str) -> float:
    store = await open_sqlite(f"sqlite:///{tmp}/raw.db")
    body = pod(0).__repr__().encode()
    rows = [
        StoredObject(
            ObjectKey("a", "c", ObjectRef(PODS, "bench", f"pod-{i}")),
            "uid",
            "1",
            "x" * 64,
            body,
            i + 1,
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    for i in range(0, n, 1000):
        await store.apply(rows[i : i + 1000])
    elapsed = time.perf_counter() - start
    await store.close()
    return n / elapsed


async def run(n: int) -> None:
    print(
        f"\nend-to-end sync of {n:,} pods (sandbox -> agent -> server -> bus -> ingester -> SQLite)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Sandbox()
        await sandbox.start()
        sandbox.load([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}])
        sandbox.load([pod(i) for i in range(n)])
        kubeconfig = Path(tmp) / "kubeconfig"
        sandbox.write_kubeconfig(kubeconfig)
        store = await open_sqlite(f"sqlite:///{tmp}/bench.db")
        bus = MemoryBus()
        tokens = TokenTable({"bench-agent-token": Identity("a", "c")})
        backend = Backend(bus, store, tokens)
        await backend.start()
        config = AgentConfig(
            server=backend.ws_url,
            account="a",
            cluster="c",
            access_key="bench-agent-token",
            resources=(ResourceSpec(PODS, Strategy.PATCH),),
            rules=NamespaceRules(),
            coalesce_quiet=0.0,
            coalesce_max_wait=0.0,
        )

        async def settled(agent: Agent, inventories: float) -> None:
            # Done when the backend's inventory came back, the agent has nothing left to send,
            # and the store holds every pod.
            while _batches_received() <= inventories or agent.outbox or len(agent.coalescer):
                await asyncio.sleep(0.02)
            while len(await store.list("a", "c", PODS)) < n:  # a costly check: poll it slowly
                await asyncio.sleep(0.2)

        async def run_agent(kube: KubeClient) -> tuple[Agent, asyncio.Task[None]]:
            agent = Agent(config, kube)
            return agent, asyncio.create_task(agent.run())

        kube = await KubeClient.connect(str(kubeconfig))
        # 1. initial sync into an empty backend
        inventories, start = _batches_received(), time.perf_counter()
        agent, task = await run_agent(kube)
        await settled(agent, inventories)
        first = time.perf_counter() - start
        # 2. the same agent reconnects (its connection dropped): caches and checksums are warm
        sent, inventories = _bytes("out") + _bytes("in"), _batches_received()
        start = time.perf_counter()
        await backend.server.connections[("a", "c")].ws.close()
        await settled(agent, inventories)
        reconnect, reconnect_wire = time.perf_counter() - start, _bytes("out") + _bytes("in") - sent
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # 3. a new agent process: lists and hashes everything again
        sent, inventories = _bytes("out") + _bytes("in"), _batches_received()
        start = time.perf_counter()
        agent, task = await run_agent(kube)
        await settled(agent, inventories)
        restart, restart_wire = time.perf_counter() - start, _bytes("out") + _bytes("in") - sent
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kube.close()
        ws_rate = await raw_websocket_rate(b"x" * 6000, 20_000)
        store_rate = await raw_store_rate(n, tmp)
        rows = [
            (
                "initial sync",
                f"{n / first:,.0f}/s",
                "raw SQLite upsert, 1k batches",
                f"{store_rate:,.0f}/s",
            ),
            ("", "", "raw websocket 6 KB frames", f"{ws_rate:,.0f}/s"),
            ("unchanged reconnect", f"{reconnect:.2f}s", "target (100k objects)", "< 5 s"),
            (
                "  bytes on the wire",
                f"{reconnect_wire / 1e3:.1f}kB",
                "target (100k objects)",
                "< 1 MB",
            ),
            ("agent restart, unchanged cluster", f"{restart:.2f}s", "", ""),
            ("  bytes on the wire", f"{restart_wire / 1e3:.1f}kB", "", ""),
        ]
        for label, value, limit_label, limit in rows:
            print(f"  {label:<44} {value:>14}   | {limit_label:<34} {limit:>14}")
        await backend.stop()
        await bus.close()
        await store.close()
        await sandbox.stop()


def _batches_received() -> float:
    value = REGISTRY.get_sample_value(
        "clustersync_messages_total", {"component": "agent", "direction": "in", "event": "batch"}
    )
    return value or 0.0
