"""The scaled-out backend for real: 2 server and 2 ingester processes, an API process, NATS
JetStream, PostgreSQL, a load balancer, and two sandbox clusters with their agents.

Covers every flow of DESIGN.md section 2 across processes, a server replica killed under a
connected agent, and a backend write to a cluster whose agent is down at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from tests.e2e.loadbalancer import LoadBalancer
from tests.faults.checker import row_differences
from tests.servers import RunningNats, free_port, start_nats

from clustersync.adapters.kube.client import KubeClient
from clustersync.model import Kind
from clustersync.protocol.agent_types import Strategy
from clustersync.protocol.shaping import NamespaceRules
from clustersync.runtime.agent import Agent
from clustersync.runtime.config import AgentConfig, ResourceSpec
from clustersync.sandbox import Sandbox

CONFIGMAPS = Kind("", "v1", "configmaps")
ADMIN = "scale-out-admin-token"
CLUSTERS = {"east": "agent-token-east", "west": "agent-token-west"}
ACCOUNT = "acme"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Process:
    name: str
    proc: asyncio.subprocess.Process
    log: Path

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()


@dataclass
class Deployment:
    tmp: Path
    nats: RunningNats
    db: str
    processes: list[Process] = field(default_factory=list)
    servers: list[tuple[Process, int]] = field(default_factory=list)
    api_url: str = ""

    async def spawn(self, name: str, *args: str) -> Process:
        log = self.tmp / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clustersync",
            *args,
            stdout=log.open("wb"),
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        process = Process(name, proc, log)
        self.processes.append(process)
        return process

    async def wait_healthy(self, process: Process, port: int) -> None:
        async def healthy() -> bool:
            if process.proc.returncode is not None:
                raise AssertionError(f"{process.name} exited:\n{process.log.read_text()[-2000:]}")
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{port}/healthz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, f"{process.name} to answer /healthz")

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.api_url}{path}", headers=headers, **kwargs) as response,
        ):
            assert response.status < 300, await response.text()
            return await response.json()

    async def stored(self, cluster: str) -> dict[tuple[str, str], dict[str, Any]]:
        """The rows of one cluster, with their objects, by (namespace, name)."""
        doc = await self.api(
            "GET", "/api/v1/objects", params={"account": ACCOUNT, "cluster": cluster, "full": "1"}
        )
        return {(i["namespace"], i["name"]): i for i in doc["items"]}


@pytest.fixture
async def deployment(tmp_path: Path, pg_database_url: str) -> AsyncIterator[Deployment]:
    nats = start_nats(tmp_path / "nats")  # its own server: the stream outlives nothing else
    dep = Deployment(tmp_path, nats, pg_database_url)
    tokens = tmp_path / "tokens.yaml"
    entries: list[dict[str, str]] = [{"token": ADMIN, "role": "admin"}]
    entries += [{"token": t, "account": ACCOUNT, "cluster": c} for c, t in CLUSTERS.items()]
    tokens.write_text(yaml.safe_dump(entries))
    try:
        migrate = await dep.spawn("migrate", "db", "migrate", "--db", dep.db)
        assert await migrate.proc.wait() == 0, migrate.log.read_text()
        for i in range(2):
            port = free_port()
            server = await dep.spawn(
                f"server-{i}",
                "server",
                "--listen",
                f"127.0.0.1:{port}",
                "--bus",
                nats.url,
                "--tokens",
                str(tokens),
            )
            dep.servers.append((server, port))
            health = free_port()
            ingester = await dep.spawn(
                f"ingester-{i}",
                "ingester",
                "--bus",
                nats.url,
                "--db",
                dep.db,
                "--health",
                f"127.0.0.1:{health}",
            )
            await dep.wait_healthy(server, port)
            await dep.wait_healthy(ingester, health)
        api_port = free_port()
        api = await dep.spawn(
            "api",
            "api",
            "--listen",
            f"127.0.0.1:{api_port}",
            "--bus",
            nats.url,
            "--db",
            dep.db,
            "--tokens",
            str(tokens),
        )
        await dep.wait_healthy(api, api_port)
        dep.api_url = f"http://127.0.0.1:{api_port}"
        yield dep
    finally:
        for process in dep.processes:
            await process.stop()
        nats.stop()


@dataclass
class Cluster:
    name: str
    sandbox: Sandbox
    kube: KubeClient
    config: AgentConfig
    agent: Agent | None = None
    task: asyncio.Task[None] | None = None

    def start_agent(self) -> None:
        self.agent = Agent(self.config, self.kube)
        self.task = asyncio.create_task(self.agent.run())

    async def stop_agent(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def configmap(self, name: str) -> dict[str, Any] | None:
        return self.sandbox.get("", "v1", "configmaps", "default", name)



@pytest.fixture
async def clusters(
    deployment: Deployment, tmp_path: Path
) -> AsyncIterator[tuple[dict[str, Cluster], LoadBalancer]]:
    balancer = LoadBalancer([("127.0.0.1", port) for _, port in deployment.servers])
    await balancer.start()
    made: dict[str, Cluster] = {}
    try:
        for name, token in CLUSTERS.items():
            sandbox = Sandbox()
            await sandbox.start()
            kubeconfig = tmp_path / f"{name}.kubeconfig"
            sandbox.write_kubeconfig(kubeconfig)
            kube = await KubeClient.connect(str(kubeconfig))
            config = AgentConfig(
                server=f"ws://127.0.0.1:{balancer.port}/",
                account=ACCOUNT,
                cluster=name,
                access_key=token,
                resources=(ResourceSpec(CONFIGMAPS, Strategy.PATCH),),
                rules=NamespaceRules(),
                coalesce_quiet=0.05,
                coalesce_max_wait=0.3,
                heartbeat=2.0,
            )
            made[name] = Cluster(name, sandbox, kube, config)
            made[name].start_agent()
        yield made, balancer
    finally:
        for cluster in made.values():
            await cluster.stop_agent()
            await cluster.kube.close()
            await cluster.sandbox.stop()
        await balancer.stop()


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": data,
    }


async def test_every_flow_across_processes_with_failover(
    deployment: Deployment, clusters: tuple[dict[str, Cluster], LoadBalancer]
) -> None:
    by_name, _ = clusters
    east, west = by_name["east"], by_name["west"]

    async def stored_matches(cluster: Cluster, name: str) -> bool:
        # The independent rules of tests/faults/checker.py: uid, resourceVersion and content.
        live = cluster.configmap(name)
        row = (await deployment.stored(cluster.name)).get(("default", name))
        return live is not None and row is not None and not row_differences(live, row)

    # Flow 1: added, then modified (patch path), in one cluster; nothing leaks to the other.
    east.sandbox.create(configmap("settings", mode="a"))
    await eventually(lambda: stored_matches(east, "settings"), "east/settings stored")
    east.sandbox.patch("", "v1", "configmaps", "default", "settings", {"data": {"mode": "b"}})
    await eventually(lambda: stored_matches(east, "settings"), "east/settings modified")
    assert ("default", "settings") not in await deployment.stored("west")

    # Flow 2: deleted in the cluster.
    east.sandbox.create(configmap("doomed", x="1"))
    await eventually(lambda: stored_matches(east, "doomed"), "east/doomed stored")
    east.sandbox.delete("", "v1", "configmaps", "default", "doomed")

    async def doomed_gone() -> bool:
        return ("default", "doomed") not in await deployment.stored("east")

    await eventually(doomed_gone, "east/doomed removed from the store")

    # Flow 3: a backend write, routed to west only, and reported back to the store.
    await deployment.api(
        "POST",
        "/api/v1/objects",
        json={"account": ACCOUNT, "cluster": "west", "object": configmap("command", run="scan")},
    )

    async def command_in_west() -> bool:
        return west.configmap("command") is not None and await stored_matches(west, "command")

    await eventually(command_in_west, "the backend write in west")
    assert east.configmap("command") is None

    # Flow 4: a backend delete.
    await deployment.api(
        "DELETE",
        "/api/v1/objects",
        params={
            "account": ACCOUNT,
            "cluster": "west",
            "kind": "/v1/configmaps",
            "namespace": "default",
            "name": "command",
        },
    )

    async def command_deleted() -> bool:
        gone = ("default", "command") not in await deployment.stored("west")
        return west.configmap("command") is None and gone

    await eventually(command_deleted, "the backend delete in west")

    # Failover: kill the first server replica (the balancer sent the first agent there).
    first, _ = deployment.servers[0]
    assert east.agent is not None and west.agent is not None
    before = east.agent.connections + west.agent.connections
    await first.kill()

    async def reconnected() -> bool:
        assert east.agent is not None and west.agent is not None
        both_up = east.agent.connected.is_set() and west.agent.connected.is_set()
        return both_up and east.agent.connections + west.agent.connections > before

    await eventually(reconnected, "an agent to move to the surviving replica")
    east.sandbox.create(configmap("after-failover", ok="yes"))
    await eventually(lambda: stored_matches(east, "after-failover"), "sync after failover")
    for cluster in (east, west):
        await deployment.api(
            "POST",
            "/api/v1/objects",
            json={
                "account": ACCOUNT,
                "cluster": cluster.name,
                "object": configmap("pushed", v="1"),
            },
        )

    async def pushed_everywhere() -> bool:
        return all(c.configmap("pushed") is not None for c in (east, west))

    await eventually(pushed_everywhere, "backend writes after failover")

    # A backend write while the cluster's agent is down waits in the bus and lands on reconnect.
    await west.stop_agent()
    await deployment.api(
        "POST",
        "/api/v1/objects",
        json={"account": ACCOUNT, "cluster": "west", "object": configmap("while-away", v="1")},
    )
    assert west.configmap("while-away") is None
    west.start_agent()

    async def delivered_late() -> bool:
        return west.configmap("while-away") is not None and await stored_matches(west, "while-away")

    await eventually(delivered_late, "the write made while west was disconnected")
