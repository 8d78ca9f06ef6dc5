"""Every background task of the agent is supervised: a failure is logged and the task starts
again, or, if it keeps failing, the agent stops with an error naming it. Nothing is swallowed.

Faults are injected by making one of the agent's own steps raise (there is no real server that
could make an informer's sink fail), then the real cluster and backend show the recovery.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clustersync.runtime.agent import Agent
from clustersync.runtime.supervisor import Supervisor, TaskFailedError

try:
    from tests.runtime.harness import CLUSTER_A, CONFIGMAPS, Probe, World, configmap, eventually
except ImportError:
    from harness import (  # type: ignore[no-redef]
        CLUSTER_A,
        CONFIGMAPS,
        Probe,
        World,
        configmap,
        eventually,
    )


def failures(task: str) -> Probe:
    return Probe.sample("clustersync_task_failures_total", component="agent", task=task)


def fail_first(calls: int, real: Any) -> Any:
    """``real``, except that its first ``calls`` calls raise."""
    count = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count <= calls:
            raise RuntimeError(f"injected failure {count}")
        return real(*args, **kwargs)

    return wrapper


async def test_a_failed_informer_is_logged_and_restarted(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    agent = world.start_agent(CLUSTER_A)
    agent.supervisor.restart_delay = 0.05
    await world.wait_synced(CLUSTER_A)
    informer_failures = failures(f"informer {CONFIGMAPS}")
    sink = agent.informers[CONFIGMAPS].sink
    agent.informers[CONFIGMAPS].sink = fail_first(1, sink)

    cluster.create(configmap("after-the-failure"))

    await eventually(
        lambda: world.matches_live(CLUSTER_A, CONFIGMAPS, "shop", "after-the-failure"),
        what="the restarted informer to sync the change",
    )
    assert informer_failures.delta == 1
    logged = [r for r in caplog.records if "failed" in r.getMessage() and r.levelname == "ERROR"]
    assert any(f"task informer {CONFIGMAPS} failed" in r.getMessage() for r in logged)
    assert any(r.exc_info for r in logged)  # with its traceback
    assert cluster.task is not None and not cluster.task.done()


async def test_an_informer_that_keeps_failing_stops_the_agent_with_an_error(
    world: World,
) -> None:
    cluster = await world.add_cluster(CLUSTER_A)
    agent = Agent(world.agent_config(CLUSTER_A), cluster.kube)
    agent.supervisor = Supervisor("agent", restart_delay=0.01, max_failures=3)
    informer = agent.informers[CONFIGMAPS]
    informer.sink = fail_first(1_000_000, informer.sink)  # every list fails in the sink
    with pytest.raises(TaskFailedError, match=f"task informer {CONFIGMAPS} failed 3 time"):
        async with asyncio.timeout(30):
            await agent.run()


async def test_a_failed_connection_task_ends_the_connection_which_starts_it_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await world.add_cluster(CLUSTER_A)
    resync_failures = failures("resync")
    agent = world.start_agent(CLUSTER_A)
    agent.session.inventory_batch = fail_first(1, agent.session.inventory_batch)  # type: ignore[method-assign]

    await world.wait_synced(CLUSTER_A)
    assert resync_failures.delta == 1
    assert agent.connections == 2  # the failure closed the first connection; the second synced
    assert any(
        "agent: resync failed; reconnecting" in r.getMessage() and r.exc_info
        for r in caplog.records
    )
