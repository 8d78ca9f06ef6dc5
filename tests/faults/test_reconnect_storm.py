"""50 agents lose their link at the same moment and all reconnect at once."""

from __future__ import annotations

import asyncio
import contextlib

from tests.faults.topology import Fleet, configmap, seed, token_of, until

from clustersync.adapters.kube.client import KubeClient
from clustersync.model import Kind
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.shaping import NamespaceRules
from clustersync.runtime.agent import Agent
from clustersync.runtime.config import AgentConfig, ResourceSpec
from clustersync.sandbox import Sandbox

AGENTS = 50


async def test_fifty_agents_reconnect_at_once(embedded: Fleet) -> None:
    # One sandbox serves all 50 "clusters" (each agent has its own identity); the agents run
    # as tasks here, since 50 interpreters would not fit the CI machine.
    sandbox = Sandbox()
    await sandbox.start()
    sandbox.load(seed(4))
    kubeconfig = embedded.tmp / "shared.kubeconfig"
    sandbox.write_kubeconfig(kubeconfig)
    names = [f"storm-{i:02d}" for i in range(AGENTS)]
    for name in names:
        await embedded.add_cluster(name, sandbox=sandbox)
    kubes: list[KubeClient] = []
    tasks: list[asyncio.Task[None]] = []
    agents: list[Agent] = []
    try:
        for name in names:
            kube = await KubeClient.connect(str(kubeconfig))
            kubes.append(kube)
            agent = Agent(AgentConfig(
                server=embedded.ws_url, account="acme", cluster=name,
                access_key=token_of(name),
                resources=(ResourceSpec(Kind("", "v1", "configmaps"), Strategy.PATCH),
                           ResourceSpec(Kind("apps", "v1", "deployments"), Strategy.PATCH)),
                rules=NamespaceRules(), coalesce_quiet=0.05, coalesce_max_wait=0.3,
                heartbeat=embedded.heartbeat), kube)
            agents.append(agent)
            tasks.append(asyncio.create_task(agent.run(), name=f"agent-{name}"))
        await embedded.checker.converged(timeout=60)

        connections = sum(a.connections for a in agents)
        assert embedded.proxy.drop() == AGENTS
        sandbox.create(configmap("during-storm"))
        sandbox.delete("", "v1", "configmaps", "default", "cm-0")
        sandbox.patch("", "v1", "configmaps", "default", "cm-1", {"data": {"v": "storm"}})

        async def all_back() -> bool:
            return sum(a.connections for a in agents) >= connections + AGENTS

        await until(all_back, "all 50 agents to reconnect", timeout=60)
        await embedded.checker.converged(timeout=60)
        assert not [t for t in tasks if t.done()], "an agent task ended"
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for kube in kubes:
            await kube.close()
