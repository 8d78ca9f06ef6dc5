"""Real processes for the fault matrix: backends, agents, a link proxy, and sandbox clusters.

Every clustersync part runs as its own ``python -m clustersync`` process so that it can be
killed with SIGKILL mid-flight; the sandbox clusters run in the test's event loop (they are the
ground truth the checker reads, and they are not under test here). Agents dial through a
:class:`~tests.e2e.loadbalancer.LoadBalancer`, which can drop or black-hole the link.

Waiting is always on a condition (a health endpoint, a log line, the checker) with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from tests.e2e.loadbalancer import LoadBalancer
from tests.faults.checker import Checker, api_rows, sandbox_lister
from tests.servers import free_port

from clustersync.sandbox import Sandbox

ACCOUNT = "acme"
ADMIN = "fault-matrix-admin-token"
CONFIGMAPS = "/v1/configmaps"
DEPLOYMENTS = "apps/v1/deployments"
KINDS = (CONFIGMAPS, DEPLOYMENTS)
# A message handed out when a process or NATS is killed is redelivered once the consumer's
# ack_wait (30 s, NatsBus's default) runs out: convergence after such a kill is bounded by that
# plus the ordinary 30 s, not by the ordinary 30 s alone (which a run then misses by chance).
AFTER_ACK_WAIT = 30.0 + 30.0
START_TIMEOUT = 30.0


def token_of(cluster: str) -> str:
    return f"agent-token-{cluster}"


async def until(check: Callable[[], Awaitable[bool]], what: str,
                timeout: float = START_TIMEOUT) -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)  # poll interval


async def http_status(url: str) -> int | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(
            url, timeout=aiohttp.ClientTimeout(total=2)
        ) as response:
            return response.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """One ``clustersync`` process; restarts append to the same log."""

    name: str
    args: list[str]
    log: Path
    health_url: str | None = None
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self) -> None:
        assert self.proc is None or self.proc.returncode is not None, f"{self.name} is running"
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "clustersync", *self.args,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        if self.health_url is not None:
            await self.wait_healthy()

    async def wait_healthy(self) -> None:
        assert self.health_url is not None

        async def healthy() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
            return await http_status(self.health_url or "") == 200

        await until(healthy, f"{self.name} to answer {self.health_url}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill9(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            await self.kill9()

    async def restart(self, kill: bool = True) -> None:
        await (self.kill9() if kill else self.stop())
        await self.start()

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------- backends


@dataclass
class Backend:
    """The backend side: one embedded process, or server/ingester/api processes on NATS + PG.

    ``agent_ports`` are the websocket ports agents may reach (the proxy balances over them).
    """

    api_url: str
    agent_ports: list[int]
    procs: dict[str, Proc]

    async def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            await proc.stop()


def write_tokens(path: Path, clusters: list[str]) -> Path:
    entries: list[dict[str, str]] = [{"token": ADMIN, "role": "admin"}]
    entries += [{"token": token_of(c), "account": ACCOUNT, "cluster": c} for c in clusters]
    path.write_text(yaml.safe_dump(entries))
    return path


async def embedded_backend(tmp: Path, tokens: Path, *extra: str) -> Backend:
    """``clustersync backend``: embedded bus and SQLite in one process."""
    port = free_port()
    proc = Proc("backend", ["backend", "--listen", f"127.0.0.1:{port}",
                            "--db", f"sqlite:///{tmp}/backend.db", "--tokens", str(tokens),
                            *extra],
                tmp / "backend.log", health_url=f"http://127.0.0.1:{port}/healthz")
    backend = Backend(f"http://127.0.0.1:{port}", [port], {"backend": proc})
    await proc.start()
    return backend


async def scaled_out_backend(tmp: Path, tokens: Path, nats_url: str, db_url: str, *,
                             servers: int = 1, ingesters: int = 1) -> Backend:
    """Separate server, ingester and API processes on NATS JetStream and PostgreSQL."""
    migrate = Proc("migrate", ["db", "migrate", "--db", db_url], tmp / "migrate.log")
    await migrate.start()
    assert migrate.proc is not None
    assert await migrate.proc.wait() == 0, migrate.tail()
    procs: dict[str, Proc] = {}
    ports = []
    for i in range(servers):
        port = free_port()
        ports.append(port)
        procs[f"server-{i}"] = Proc(
            f"server-{i}", ["server", "--listen", f"127.0.0.1:{port}", "--bus", nats_url,
                            "--tokens", str(tokens)],
            tmp / f"server-{i}.log", health_url=f"http://127.0.0.1:{port}/healthz")
    for i in range(ingesters):
        health = free_port()
        procs[f"ingester-{i}"] = Proc(
            f"ingester-{i}", ["ingester", "--bus", nats_url, "--db", db_url,
                              "--health", f"127.0.0.1:{health}"],
            tmp / f"ingester-{i}.log", health_url=f"http://127.0.0.1:{health}/healthz")
    api = free_port()
    procs["api"] = Proc("api", ["api", "--listen", f"127.0.0.1:{api}", "--bus", nats_url,
                                "--db", db_url, "--tokens", str(tokens)],
                        tmp / "api.log", health_url=f"http://127.0.0.1:{api}/healthz")
    backend = Backend(f"http://127.0.0.1:{api}", ports, procs)
    try:
        await asyncio.gather(*(p.start() for p in procs.values()))
    except BaseException:
        await backend.stop()
        raise
    return backend


# ---------------------------------------------------------------- objects


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {"set": "faults"}},
            "data": dict(data) or {"key": name}}


def deployment(name: str, namespace: str = "default", secret: str = "s3cr3t") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "main", "image": f"shop/{name}:1",
                      "env": [{"name": "PASSWORD", "value": secret}]}]}}},
    }


def seed(count: int = 6) -> list[dict[str, Any]]:
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}]
    objects += [configmap(f"cm-{i}", v=str(i)) for i in range(count)]
    objects += [deployment("web"), deployment("api", secret="hunter2")]
    return objects


# ---------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    """Sandbox clusters, their agents (processes, or tasks for big fleets), a backend, a proxy
    in between, and the checker over all of it."""

    tmp: Path
    backend: Backend
    http: aiohttp.ClientSession
    proxy: LoadBalancer
    checker: Checker
    heartbeat: float = 2.0
    sandboxes: dict[str, Sandbox] = field(default_factory=dict)
    agents: dict[str, Proc] = field(default_factory=dict)
    agent_ready: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.proxy.port}/"

    async def add_cluster(self, name: str, objects: list[dict[str, Any]] | None = None,
                          sandbox: Sandbox | None = None) -> Sandbox:
        if sandbox is None:
            sandbox = Sandbox()
            await sandbox.start()
            sandbox.load(seed() if objects is None else objects)
        self.sandboxes[name] = sandbox
        self.checker.add_cluster(name, sandbox_lister(sandbox))
        return sandbox

    def agent_config(self, name: str, **overrides: Any) -> dict[str, Any]:
        kubeconfig = self.tmp / f"{name}.kubeconfig"
        self.sandboxes[name].write_kubeconfig(kubeconfig)
        doc: dict[str, Any] = {
            "server": self.ws_url, "account": ACCOUNT, "cluster": name,
            "accessKey": token_of(name), "kubeconfig": str(kubeconfig),
            "resources": [
                {"group": "", "version": "v1", "resource": "configmaps", "strategy": "patch"},
                {"group": "apps", "version": "v1", "resource": "deployments",
                 "strategy": "patch"},
            ],
            "coalesce": {"quiet": 0.05, "maxWait": 0.3},
            "heartbeat": self.heartbeat,
        }
        doc.update(overrides)
        return doc

    async def start_agent(self, name: str, *, wait: bool = True, **overrides: Any) -> Proc:
        """An agent process for cluster ``name``, waited on until it reports ready."""
        config = self.tmp / f"{name}.agent.yaml"
        config.write_text(yaml.safe_dump(self.agent_config(name, **overrides)))
        health = free_port()
        proc = Proc(f"agent-{name}", ["agent", "--config", str(config),
                                      "--health", f"127.0.0.1:{health}"],
                    self.tmp / f"agent-{name}.log")
        self.agents[name] = proc
        self.agent_ready[name] = f"http://127.0.0.1:{health}/readyz"
        await proc.start()
        if wait:
            await self.wait_agent_ready(name)
        return proc

    async def wait_agent_ready(self, name: str, timeout: float = START_TIMEOUT) -> None:
        proc = self.agents[name]

        async def ready() -> bool:
            if not proc.running:
                raise AssertionError(f"{proc.name} exited:\n{proc.tail()}")
            return await http_status(self.agent_ready[name]) == 200

        await until(ready, f"{proc.name} to be ready", timeout)

    async def push(self, cluster: str, obj: dict[str, Any], kind: str) -> None:
        """A backend write through the API; the checker expects the cluster to end up with it."""
        await self.api("POST", "/api/v1/objects",
                       json={"account": ACCOUNT, "cluster": cluster, "object": obj})
        self.checker.wrote(cluster, kind, obj)

    async def delete(self, cluster: str, kind: str, namespace: str, name: str) -> None:
        await self.api("DELETE", "/api/v1/objects", params={
            "account": ACCOUNT, "cluster": cluster, "kind": kind,
            "namespace": namespace, "name": name})
        self.checker.deleted(cluster, kind, namespace, name)

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.http.request(
            method, f"{self.backend.api_url}{path}",
            headers={"Authorization": f"Bearer {ADMIN}"}, **kwargs,
        ) as response:
            body = await response.text()
            assert response.status < 300, f"{method} {path}: {response.status} {body}"
            return body

    def print_logs(self, lines: int = 25) -> None:
        """Every process's log tail on stdout: pytest shows it when the test failed."""
        for proc in [*self.backend.procs.values(), *self.agents.values()]:
            print(f"--- {proc.name} (started {proc.starts}x) ---\n{proc.tail(lines)}")

    async def stop(self) -> None:
        for proc in self.agents.values():
            await proc.stop()
        await self.proxy.stop()
        await self.backend.stop()
        for sandbox in {id(s): s for s in self.sandboxes.values()}.values():
            await sandbox.stop()
        await self.http.close()


async def make_fleet(tmp: Path, backend: Backend, heartbeat: float = 2.0) -> Fleet:
    http = aiohttp.ClientSession()
    proxy = LoadBalancer([("127.0.0.1", port) for port in backend.agent_ports])
    await proxy.start()
    checker = Checker(api_rows(http, lambda: backend.api_url, ADMIN, ACCOUNT), kinds=KINDS)
    return Fleet(tmp, backend, http, proxy, checker, heartbeat)


@contextlib.asynccontextmanager
async def stopping(fleet: Fleet) -> Any:
    try:
        yield fleet
    finally:
        await fleet.stop()
