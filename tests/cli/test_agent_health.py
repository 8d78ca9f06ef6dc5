"""``clustersync agent --health``: liveness, readiness that follows the link, and metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from .clitools import Process, free_port, wait_until
from .conftest import Backend, Cluster, write_agent_config


async def _status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return 0


async def test_readiness_follows_the_connection_to_the_server(
    tmp_path: Path, backend: Backend, cluster: Cluster
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_agent_config(tmp_path / "agent.yaml", backend.url, cluster.kubeconfig)
    agent = Process(
        "agent", ["agent", "--config", str(config), "--health", f"127.0.0.1:{port}"], tmp_path
    )
    await agent.start()
    try:

        async def ready() -> bool:
            return await _status(f"{base}/readyz") == 200

        await wait_until(ready, "the agent to be ready (connected and synced)")
        assert await _status(f"{base}/healthz") == 200
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
            assert "clustersync_messages_total" in await response.text()

        await backend.process.stop()  # the server goes away: still alive, no longer ready

        async def unready() -> bool:
            return await _status(f"{base}/readyz") == 503

        await wait_until(unready, "the agent to report not ready")
        assert await _status(f"{base}/healthz") == 200
    finally:
        await agent.stop()
