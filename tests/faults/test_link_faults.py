"""The agent's link fails: closed cleanly, black-holed, or dialled into a server that never
answers."""

from __future__ import annotations

from tests.faults.topology import CONFIGMAPS, Fleet, configmap, until


def change(fleet: Fleet, tag: str) -> None:
    sandbox = fleet.sandboxes["c1"]
    sandbox.create(configmap(f"{tag}-new"))
    sandbox.patch("", "v1", "configmaps", "default", "cm-1", {"data": {"v": tag}})
    sandbox.delete("", "v1", "configmaps", "default", "cm-2")


async def redialled(fleet: Fleet, before: int, timeout: float) -> None:
    async def dialled() -> bool:
        return fleet.proxy.accepted > before

    await until(dialled, "the agent to dial again", timeout)


async def test_link_dropped(embedded: Fleet) -> None:
    await embedded.add_cluster("c1")
    await embedded.start_agent("c1")
    await embedded.checker.converged()

    before = embedded.proxy.accepted
    assert embedded.proxy.drop() == 1
    change(embedded, "dropped")
    await embedded.push("c1", configmap("pushed", v="1"), CONFIGMAPS)
    await redialled(embedded, before, timeout=15)
    await embedded.checker.converged()


async def test_link_black_holed(embedded: Fleet) -> None:
    await embedded.add_cluster("c1")
    await embedded.start_agent("c1")
    await embedded.checker.converged()

    before = embedded.proxy.accepted
    assert embedded.proxy.blackhole() == 1
    change(embedded, "blackholed")
    await embedded.push("c1", configmap("pushed", v="1"), CONFIGMAPS)
    # Only the agent's heartbeat (2 s here) can notice; it must then dial a fresh connection.
    await redialled(embedded, before, timeout=10 * embedded.heartbeat)
    await embedded.checker.converged()


async def test_dial_into_a_mute_server(embedded: Fleet) -> None:
    await embedded.add_cluster("c1")
    await embedded.start_agent("c1")
    await embedded.checker.converged()

    embedded.proxy.mute = True
    before = embedded.proxy.accepted
    embedded.proxy.drop()
    await redialled(embedded, before, timeout=15)  # this dial is held, never answered
    embedded.proxy.mute = False
    change(embedded, "after-mute")
    # A dial timeout of a few heartbeats lets the agent give up and dial again.
    await embedded.wait_agent_ready("c1", timeout=20)
    await embedded.checker.converged(timeout=20)
