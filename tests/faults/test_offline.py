"""While the agent is stopped: deletes in the cluster, and backend writes and deletes queued
for it. On restart both sides repair what the other missed."""

from __future__ import annotations

from tests.faults.topology import CONFIGMAPS, DEPLOYMENTS, Fleet, configmap, deployment


async def test_offline_deletes_and_backend_writes(scaled: Fleet) -> None:
    sandbox = await scaled.add_cluster("c1")
    agent = await scaled.start_agent("c1")
    await scaled.push("c1", configmap("command", v="1"), CONFIGMAPS)
    await scaled.checker.converged()

    await agent.stop()  # a clean stop: the agent is simply away
    for name in ("cm-0", "cm-1"):  # deletes only a relist can see
        sandbox.delete("", "v1", "configmaps", "default", name)
    sandbox.delete("apps", "v1", "deployments", "default", "web")
    await scaled.push("c1", configmap("while-away", v="1"), CONFIGMAPS)
    await scaled.push("c1", deployment("api", secret="rotated"), DEPLOYMENTS)  # a replace
    await scaled.delete("c1", CONFIGMAPS, "default", "command")
    await scaled.delete("c1", CONFIGMAPS, "default", "cm-3")
    await agent.start()
    await scaled.checker.converged()
    live = sandbox.get("apps", "v1", "deployments", "default", "api")
    assert live is not None
    env = live["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "PASSWORD", "value": "rotated"}]
