"""kill -9 of each process while objects change, then convergence with nothing diverged."""

from __future__ import annotations

from tests.faults.topology import (
    AFTER_ACK_WAIT,
    CONFIGMAPS,
    DEPLOYMENTS,
    Fleet,
    configmap,
    deployment,
)

VICTIMS = {"during": "cm-2", "offline": "cm-3", "after": "cm-4"}  # seed objects deleted


def churn(fleet: Fleet, cluster: str, tag: str) -> None:
    """Create, modify and delete objects in the cluster (the checker reads the result)."""
    victim = VICTIMS[tag]
    sandbox = fleet.sandboxes[cluster]
    for i in range(3):
        sandbox.create(configmap(f"{tag}-{i}", v="1"))
    sandbox.patch("", "v1", "configmaps", "default", f"{tag}-0", {"data": {"v": "2"}})
    sandbox.patch("", "v1", "configmaps", "default", "cm-1", {"data": {"v": tag}})
    sandbox.patch("apps", "v1", "deployments", "default", "web", {"spec": {"replicas": 3}})
    if sandbox.get("", "v1", "configmaps", "default", victim) is not None:
        sandbox.delete("", "v1", "configmaps", "default", victim)
    sandbox.delete("", "v1", "configmaps", "default", f"{tag}-2")


async def test_agent_killed(embedded: Fleet) -> None:
    await embedded.add_cluster("c1")
    agent = await embedded.start_agent("c1")
    await embedded.checker.converged()

    churn(embedded, "c1", "during")
    await agent.kill9()  # mid-flight: some changes were sent, some not
    churn(embedded, "c1", "offline")  # and the agent is down for these
    await embedded.push("c1", configmap("pushed-while-down", v="1"), CONFIGMAPS)
    await agent.start()
    await embedded.checker.converged()


async def test_backend_killed(embedded: Fleet) -> None:
    await embedded.add_cluster("c1")
    await embedded.start_agent("c1")
    await embedded.checker.converged()

    churn(embedded, "c1", "during")
    await embedded.backend.procs["backend"].restart(kill=True)
    churn(embedded, "c1", "after")  # modifies and deletes of objects stored before the crash
    await embedded.push("c1", deployment("pushed", secret="x"), DEPLOYMENTS)
    await embedded.checker.converged()


async def test_backend_restarted_cleanly(embedded: Fleet) -> None:
    await embedded.add_cluster("c1")
    await embedded.start_agent("c1")
    await embedded.checker.converged()

    await embedded.backend.procs["backend"].restart(kill=False)
    churn(embedded, "c1", "after")
    await embedded.checker.converged()


async def test_server_killed(scaled: Fleet) -> None:
    await scaled.add_cluster("c1")
    await scaled.start_agent("c1")
    await scaled.checker.converged()

    churn(scaled, "c1", "during")
    await scaled.backend.procs["server-0"].restart(kill=True)
    churn(scaled, "c1", "after")
    await scaled.push("c1", configmap("pushed", v="1"), CONFIGMAPS)
    await scaled.checker.converged()


async def test_ingester_killed(scaled: Fleet) -> None:
    await scaled.add_cluster("c1")
    await scaled.start_agent("c1")
    await scaled.checker.converged()

    churn(scaled, "c1", "during")
    await scaled.push("c1", configmap("pushed", v="1"), CONFIGMAPS)
    await scaled.backend.procs["ingester-0"].restart(kill=True)
    churn(scaled, "c1", "after")
    await scaled.checker.converged(timeout=AFTER_ACK_WAIT)


async def test_api_killed(scaled: Fleet) -> None:
    await scaled.add_cluster("c1")
    await scaled.start_agent("c1")
    await scaled.checker.converged()

    await scaled.push("c1", configmap("pushed", v="1"), CONFIGMAPS)
    await scaled.backend.procs["api"].restart(kill=True)
    await scaled.push("c1", configmap("pushed-after", v="1"), CONFIGMAPS)
    churn(scaled, "c1", "after")
    await scaled.checker.converged()
