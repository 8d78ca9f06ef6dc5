"""PostgreSQL and NATS go away under a running scaled-out backend and come back."""

from __future__ import annotations

import asyncio

from tests.faults.topology import AFTER_ACK_WAIT, CONFIGMAPS, Fleet, configmap
from tests.servers import RunningNats, RunningPostgres


def change(fleet: Fleet, tag: str) -> None:
    sandbox = fleet.sandboxes["c1"]
    sandbox.create(configmap(f"{tag}-new"))
    sandbox.patch("", "v1", "configmaps", "default", "cm-1", {"data": {"v": tag}})
    sandbox.delete("", "v1", "configmaps", "default", f"cm-{len(tag) % 4 + 2}")


async def test_postgres_restarted(scaled: Fleet, postgres_server: RunningPostgres) -> None:
    await scaled.add_cluster("c1")
    await scaled.start_agent("c1")
    await scaled.checker.converged()

    # pg_ctl blocks; run it off the loop so the sandbox keeps serving the agent meanwhile.
    await asyncio.to_thread(postgres_server.pause)
    try:
        change(scaled, "pg-down")
        await scaled.push("c1", configmap("pushed-while-pg-down", v="1"), CONFIGMAPS)
    finally:
        await asyncio.to_thread(postgres_server.resume)
    await scaled.checker.converged()


async def test_nats_restarted(scaled: Fleet, own_nats: RunningNats) -> None:
    await scaled.add_cluster("c1")
    await scaled.start_agent("c1")
    await scaled.checker.converged()

    await asyncio.to_thread(own_nats.stop)
    change(scaled, "nats-down")
    await asyncio.to_thread(own_nats.start)
    await scaled.push("c1", configmap("pushed-after-restart", v="1"), CONFIGMAPS)
    await scaled.checker.converged(timeout=AFTER_ACK_WAIT)


async def test_nats_killed(scaled: Fleet, own_nats: RunningNats) -> None:
    await scaled.add_cluster("c1")
    await scaled.start_agent("c1")
    await scaled.checker.converged()

    change(scaled, "before-kill")
    await asyncio.to_thread(own_nats.kill)
    change(scaled, "nats-dead")
    await asyncio.to_thread(own_nats.start)
    await scaled.push("c1", configmap("pushed-after-crash", v="1"), CONFIGMAPS)
    await scaled.checker.converged(timeout=AFTER_ACK_WAIT)
