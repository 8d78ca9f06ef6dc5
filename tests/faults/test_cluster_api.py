"""The cluster's API server misbehaves: expired watches (410) and bursts of 500 and 429."""

from __future__ import annotations

import pytest
from tests.faults.topology import CONFIGMAPS, Fleet, configmap, until


async def test_watch_expired_410(embedded: Fleet) -> None:
    sandbox = await embedded.add_cluster("c1")
    await embedded.start_agent("c1")
    await embedded.checker.converged()

    sandbox.compact()  # history forgotten: resuming from any earlier resourceVersion is 410
    await sandbox.drop_watches()
    sandbox.create(configmap("after-compaction"))
    sandbox.delete("", "v1", "configmaps", "default", "cm-0")  # only a relist can see this
    sandbox.patch("", "v1", "configmaps", "default", "cm-1", {"data": {"v": "changed"}})
    await embedded.checker.converged()


@pytest.mark.parametrize("status", [500, 429])
async def test_api_server_error_burst(embedded: Fleet, status: int) -> None:
    sandbox = await embedded.add_cluster("c1")
    await embedded.start_agent("c1")
    await embedded.checker.converged()

    sandbox.fail_requests(status, 5)
    await sandbox.drop_watches()  # the agent must re-watch (and maybe relist) into the burst
    sandbox.create(configmap("during-burst"))
    sandbox.delete("", "v1", "configmaps", "default", "cm-0")

    async def burst_served() -> bool:
        return sandbox.failures_left == 0

    await until(burst_served, f"the agent to run into all {status} answers")
    await embedded.checker.converged()


@pytest.mark.parametrize("status", [500, 429])
async def test_backend_write_during_api_error_burst(embedded: Fleet, status: int) -> None:
    sandbox = await embedded.add_cluster("c1")
    await embedded.start_agent("c1")
    await embedded.checker.converged()

    sandbox.fail_requests(status, 1)
    await embedded.push("c1", configmap("pushed-during-burst", v="1"), CONFIGMAPS)

    async def burst_served() -> bool:
        return sandbox.failures_left == 0

    await until(burst_served, f"the agent to run into the {status} answers")
    await embedded.checker.converged(timeout=8)
