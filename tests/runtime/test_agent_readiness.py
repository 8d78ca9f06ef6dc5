"""The agent's /readyz says what it is waiting for: a kind's first list, or the connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families

from clustersync.runtime.agent import Agent
from clustersync.runtime.http import health_site

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import CLUSTER_A, World, eventually
except ImportError:  # plain `pytest`: the test directory itself is on sys.path
    from harness import CLUSTER_A, World, eventually  # type: ignore[no-redef]


async def test_readyz_names_what_the_agent_waits_for(world: World) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    nowhere = "ws://127.0.0.1:9/"  # discard port: nothing answers
    agent = Agent(world.agent_config(CLUSTER_A, server=nowhere), cluster.kube)
    site = health_site(ready=agent.ready, waiting=agent.waiting_for, roles=["agent"])
    url = await site.start()

    async def readyz() -> tuple[int, str]:
        async with world.http.get(f"{url}/readyz") as response:
            return response.status, await response.text()

    task = None
    try:
        status, body = await readyz()
        assert status == 503
        assert body.startswith("not ready: waiting for the first list of: /v1/namespaces, ")
        task = asyncio.create_task(agent.run())
        status, body = await eventually(
            lambda: _if(readyz(), lambda r: "connection" in r[1]), what="every kind listed"
        )
        assert (status, body) == (503, f"not ready: waiting for the connection to {nowhere}\n")
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await site.stop()

    world.start_agent(CLUSTER_A)
    await world.wait_synced(CLUSTER_A)
    live = world.clusters[CLUSTER_A].agent
    assert live is not None and live.waiting_for() == ""


async def _if(
    pending: Awaitable[tuple[int, str]], check: Callable[[tuple[int, str]], bool]
) -> tuple[int, str] | None:
    value = await pending
    return value if check(value) else None


async def test_queued_gauges_show_what_waits_without_a_connection(world: World) -> None:
    """With no server to send to, the listed cluster's objects wait in the agent; its /metrics
    says how many, per queue, as the production benchmark reads them."""
    cluster = await world.add_cluster(CLUSTER_A)
    agent = Agent(world.agent_config(CLUSTER_A, server="ws://127.0.0.1:9/"), cluster.kube)
    site = health_site(ready=agent.ready, waiting=agent.waiting_for, roles=["agent"])
    url = await site.start()

    async def queued() -> dict[str, float] | None:
        async with world.http.get(f"{url}/metrics") as response:
            text = await response.text()
        values = {
            dict(sample.labels)["queue"]: sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "clustersync_agent_queued"
            for sample in family.samples
        }
        seen = (values.get("coalescer"), values.get("outbox"))
        settled = seen == (len(agent.coalescer), len(agent.outbox)) and sum(seen) > 0  # type: ignore[arg-type]
        return values if settled else None

    task = asyncio.create_task(agent.run())
    try:
        values = await eventually(queued, what="the listed objects queued and counted")
        assert set(values) == {"coalescer", "outbox"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await site.stop()
