"""``python -m benchmarks.writes [--writes N]``: backend writes end to end, one after another,
from the API's 202 to the outcome the agent reported, beside a raw API round trip.

Real parts on loopback: a sandbox cluster, ``clustersync backend`` (embedded bus, SQLite) and an
agent. Each write is a ConfigMap pushed through ``POST /api/v1/objects``; its outcome is polled
at ``/api/v1/writes/{id}`` until it is no longer pending (polling every millisecond, so the
figure is the pipeline's latency, not the poll interval's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from clustersync.adapters.bus.memory import MemoryBus
from clustersync.adapters.kube.client import KubeClient
from clustersync.adapters.store.sqlite import open_sqlite
from clustersync.model import Kind
from clustersync.model.identity import Identity, TokenTable
from clustersync.protocol.agent_types import Strategy
from clustersync.runtime.agent import Agent
from clustersync.runtime.backend import Backend
from clustersync.runtime.config import AgentConfig, ResourceSpec
from clustersync.sandbox import Sandbox

CONFIGMAPS = Kind("", "v1", "configmaps")
ADMIN = {"Authorization": "Bearer bench-admin-token"}
POLL = 0.001


def _configmap(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"bench-{i}", "namespace": "default"},
        "data": {"i": str(i)},
    }


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def _write(http: aiohttp.ClientSession, url: str, i: int) -> tuple[float, str]:
    body = {"account": "bench", "cluster": "c1", "object": _configmap(i)}
    started = time.perf_counter()
    async with http.post(f"{url}/api/v1/objects", json=body, headers=ADMIN) as response:
        assert response.status == 202, await response.text()
        location = response.headers["Location"]
    while True:
        async with http.get(f"{url}{location}", headers=ADMIN) as response:
            status = (await response.json())["status"]
        if status != "pending":
            return time.perf_counter() - started, status
        await asyncio.sleep(POLL)


async def run(writes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Sandbox()
        await sandbox.start()
        sandbox.load([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}])
        kubeconfig = Path(tmp) / "kubeconfig"
        sandbox.write_kubeconfig(kubeconfig)
        kube = await KubeClient.connect(str(kubeconfig))
        store = await open_sqlite(f"sqlite:///{tmp}/bench.db")
        bus = MemoryBus()
        tokens = TokenTable(
            {
                "bench-agent-token": Identity("bench", "c1"),
                "bench-admin-token": Identity(admin=True),
            }
        )
        backend = Backend(bus, store, tokens)
        await backend.start()
        config = AgentConfig(
            server=backend.ws_url,
            account="bench",
            cluster="c1",
            access_key="bench-agent-token",
            resources=(ResourceSpec(CONFIGMAPS, Strategy.COPY),),
            coalesce_quiet=0.01,
            coalesce_max_wait=0.05,
        )
        agent = Agent(config, kube)
        task = asyncio.create_task(agent.run())
        try:
            async with aiohttp.ClientSession() as http:
                while await store.cluster_info("bench", "c1") is None:  # the agent described itself
                    await asyncio.sleep(0.01)
                raw = []
                for _ in range(writes):
                    started = time.perf_counter()
                    async with http.get(f"{backend.url}/api/v1/writes/none", headers=ADMIN):
                        raw.append(time.perf_counter() - started)
                latencies, outcomes = [], set()
                for i in range(writes):
                    latency, status = await _write(http, backend.url, i)
                    latencies.append(latency)
                    outcomes.add(status)
            print(f"backend writes one at a time, POST to outcome ({writes}, all {outcomes}):")
            for name, values in (("write to outcome", latencies), ("raw API round trip", raw)):
                print(
                    f"  {name:>20}: p50 {statistics.median(values) * 1000:6.1f} ms"
                    f"  p99 {_percentile(values, 0.99) * 1000:6.1f} ms"
                )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await backend.stop()
            await bus.close()
            await store.close()
            await kube.close()
            await sandbox.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writes")
    parser.add_argument("--writes", type=int, default=200)
    asyncio.run(run(parser.parse_args().writes))


if __name__ == "__main__":
    main()
